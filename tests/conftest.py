"""Shared fixtures: an embedded Postgres + pgvector server and a tiny in-process BERT model."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def pg_server(tmp_path_factory):
    """One embedded PostgreSQL 18 server with pgvector for the whole session."""
    from embedops.store import embedded

    server = embedded.start(tmp_path_factory.mktemp("pg") / "data")
    yield server
    server.stop()


@pytest.fixture
def dsn(pg_server, request):
    """A fresh database on the session server for each test: tests never see each other's tables."""
    import psycopg
    from psycopg import sql

    name = "t_" + request.node.name.lower().translate({ord(c): "_" for c in "[]-.:/ ,="})[:40] + f"_{os.getpid()}"
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    yield pg_server.dsn_for(name)
    with psycopg.connect(pg_server.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    """A tiny random BERT saved as a sentence-transformers folder (built in-process, no download).

    It reuses the bundled MiniLM's tokenizer so it tokenises real text the same way.
    """
    from tests.tinymodel import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "model")

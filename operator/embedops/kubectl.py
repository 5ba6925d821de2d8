"""`kubectl embedops`: day-2 operations on a cluster, through the API server only.

Installed as the `kubectl-embedops` command, which kubectl runs as `kubectl embedops ...` (the
shape of CloudNativePG's `kubectl cnpg`). It reads status and writes the spec or annotations of
the resources, never the database and never a Job: the operator does the work, so the plugin
needs no credentials beyond the user's own RBAC (the chart's `embedops-edit` role, or `edit`).
`search` asks the index's query Service (spec.serving) through the API server's service proxy.

    kubectl embedops status [NAME]              every resource (or one), Ready, phase and why
    kubectl embedops versions [INDEX]           an index's (or every index's) versions and last probes
    kubectl embedops pin INDEX VERSION          serve exactly that version (spec.pinnedVersion)
    kubectl embedops unpin INDEX                follow new models again
    kubectl embedops rollback INDEX [--to N]    pin the version before the live one (or N)
    kubectl embedops rerun NAME                 run the resource's work again (embedops.dev/rerun)
    kubectl embedops probe INDEX                probe the live version now (embedops.dev/probe)
    kubectl embedops sync INDEX                 sync the live version with its table now (embedops.dev/sync)
    kubectl embedops search INDEX QUERY [-k N]  the k nearest rows (id, distance) from the index's query Service

NAME is `name`, or `kind/name` where two kinds share a name (kinds by name, plural or short name:
eds, ftj, eix). kubectl's global flags go before or after the command, as kubectl takes them:
-n/--namespace, --context, --kubeconfig; status and versions take -A/--all-namespaces and
-o/--output json|yaml|wide. Errors are one line on stderr, as kubectl writes them, with exit code 1.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any, NoReturn

import yaml

from embedops.api import times
from embedops.api.common import GROUP, VERSION
from embedops.api.index import RETAINED_STATES, SEARCH_MAX_K
from embedops.api.kinds import KINDS, ORDER
from embedops.builders import serving
from embedops.reconcile import PROBE_ANNOTATION, RERUN_ANNOTATION, SYNC_ANNOTATION, references

RETRIES = 10  # client-go's for answers that say Retry-After
READERS = ("status", "versions")  # the commands that take -A and -o
WATCH_HINT = (
    "hint: {what} in namespace {ns} {has} no status at all: the operator may not watch that namespace "
    "(`embedops operator -n`, the chart's watchNamespaces), or it is not running"
)


class PluginError(Exception):
    """A one-line error, printed as kubectl prints its own (`error: ...`)."""


class ServerError(PluginError):
    """The API server refused: printed as kubectl does, `Error from server (Reason): message`."""


def _from_server(err: Any, verb: str, plural: str, namespace: str | None, name: str | None = None) -> PluginError:
    """An ApiException as one line, with the server's own message where it sent one."""
    try:
        body = json.loads(err.body or "")
    except (TypeError, ValueError):
        body = {}
    reason = body.get("reason") or err.reason or str(err.status)
    if err.status == 401:
        return PluginError("You must be logged in to the server (Unauthorized)")
    message = body.get("message")
    if not message:
        where = f" in the namespace {namespace!r}" if namespace else " at the cluster scope"
        thing = f"{plural}.{GROUP}" + (f" {name!r}" if name else "")
        message = f"cannot {verb} {thing}{where}: {err.status} {err.reason}"
    if err.status == 404 and not name:
        message += f" (are the {GROUP} CRDs installed?)"
    return ServerError(f"({reason}): {message}")


QUERY_PORT = serving.PORT_NAME  # the port name of an index's query Service, `<index>-query` (spec.serving)
PROXY_TIMEOUT = 60  # seconds for one search through the service proxy


class Api:
    """The custom-objects calls the commands make, each failure one PluginError naming what was asked."""

    def __init__(self, custom: Any, server: str = "") -> None:
        self.custom = custom
        self.server = server

    def proxy_post(self, namespace: str, service: str, path: str, body: dict[str, Any]) -> tuple[int, Any]:
        """POST `body` to `path` of a Service's `http` port through the API server's service proxy:
        the status and the answer (parsed JSON, else its text), whatever the status."""
        from urllib3.exceptions import HTTPError

        client = self.custom.api_client
        request = client.param_serialize(
            "POST",
            f"/api/v1/namespaces/{{namespace}}/services/{service}:{QUERY_PORT}/proxy/{path}",
            path_params={"namespace": namespace},
            header_params={"Content-Type": "application/json", "Accept": "application/json"},
            body=body,
            auth_settings=["BearerToken"],
        )
        try:
            response = client.call_api(*request, _request_timeout=PROXY_TIMEOUT)
            response.read()
        except HTTPError as err:
            raise _unreachable(self.server, err) from None
        text = (response.data or b"").decode("utf-8", "replace")
        try:
            return response.status, json.loads(text)
        except ValueError:
            return response.status, text.strip()

    def _call(self, verb: str, plural: str, namespace: str | None, name: str | None, fn: Any, *args: Any) -> Any:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        for attempt in range(RETRIES + 1):
            try:
                return fn(GROUP, VERSION, *args)
            except ApiException as err:
                if err.status == 404 and name:
                    return None
                if attempt < RETRIES and (wait := _retry_after(err)) is not None:
                    time.sleep(wait)
                    continue
                raise _from_server(err, verb, plural, namespace, name) from None
            except HTTPError as err:
                raise _unreachable(self.server, err) from None
        raise AssertionError("unreachable")  # pragma: no cover - the loop returns or raises

    def get(self, namespace: str, plural: str, name: str) -> dict[str, Any] | None:
        return self._call(
            "get", plural, namespace, name, self.custom.get_namespaced_custom_object, namespace, plural, name
        )

    def objects(self, namespace: str | None, plural: str) -> list[dict[str, Any]]:
        if namespace is None:
            found = self._call("list", plural, None, None, self.custom.list_cluster_custom_object, plural)
        else:
            found = self._call(
                "list", plural, namespace, None, self.custom.list_namespaced_custom_object, namespace, plural
            )
        return list(found["items"])

    def patch(self, obj: dict[str, Any], patch: dict[str, Any]) -> None:
        meta, plural = obj["metadata"], KINDS[obj["kind"]].plural
        ns, name = meta["namespace"], meta["name"]
        fn = self.custom.patch_namespaced_custom_object
        if self._call("patch", plural, ns, name, fn, ns, plural, name, patch) is None:
            raise PluginError(f"{obj['kind']}/{name} is gone from namespace {ns}")


def _retry_after(err: Any) -> float | None:
    """Seconds to wait before asking again, as client-go does: a 429 (the server's storage still
    initializing, priority and fairness), or a 5xx that says Retry-After."""
    header = (err.headers or {}).get("Retry-After")
    if err.status != 429 and not (header and 500 <= err.status < 600):
        return None
    try:
        return min(float(header), 10.0) if header else 1.0
    except ValueError:
        return 1.0


def _unreachable(server: str, err: Exception) -> PluginError:
    reason = getattr(err, "reason", None) or err
    if "refused" in str(reason).lower():
        return PluginError(
            f"The connection to the server {server} was refused - did you specify the right host or port?"
        )
    return PluginError(f"Unable to connect to the server {server}: {reason}")


def connect(kubeconfig: str | None, context: str | None) -> tuple[Api, str]:
    """The API of the kubeconfig's context (or the pod's service account), and its namespace."""
    from kubernetes import client, config

    configuration = client.Configuration()
    try:
        contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        chosen = next((c for c in contexts if c["name"] == context), None) if context else active
        if chosen is None:
            raise PluginError(f"context {context!r} does not exist")
        config.load_kube_config(config_file=kubeconfig, context=context, client_configuration=configuration)
        namespace = (chosen.get("context") or {}).get("namespace") or "default"
    except config.ConfigException as err:
        if kubeconfig or context:
            raise PluginError(f"kubeconfig {kubeconfig or '(default)'}: {err}") from None
        try:
            config.load_incluster_config(client_configuration=configuration)
        except config.ConfigException:
            raise PluginError(
                "no kubeconfig and not in a pod: set KUBECONFIG or --kubeconfig (as kubectl reads it), "
                f"or run in a pod with a service account ({err})"
            ) from None
        namespace = "default"
    configuration.retries = 0  # an unreachable server is one line at once, not three retries and a traceback
    return Api(client.CustomObjectsApi(client.ApiClient(configuration)), configuration.host), namespace


def _kind(word: str) -> str:
    for kind in KINDS.values():
        if word.lower() in (kind.kind.lower(), kind.plural, kind.singular, *kind.short_names):
            return kind.kind
    raise PluginError(f"{word!r} is not an embedops kind ({', '.join(ORDER)})")


def _find(api: Api, namespace: str, ref: str, kinds: tuple[str, ...] = ORDER) -> dict[str, Any]:
    if "/" in ref:
        word, name = ref.split("/", 1)
        kinds = (_kind(word),)
    else:
        name = ref
    found = [o for kind in kinds if (o := api.get(namespace, KINDS[kind].plural, name)) is not None]
    if not found:
        raise ServerError(f"(NotFound): no {' or '.join(kinds)} named {name!r} in namespace {namespace}")
    if len(found) > 1:
        raise PluginError(f"{name!r} names a {' and a '.join(o['kind'] for o in found)}: say which, as kind/name")
    return found[0]


def _list(api: Api, namespace: str | None, kinds: Sequence[str] = ORDER) -> list[dict[str, Any]]:
    return [o for kind in kinds for o in api.objects(namespace, KINDS[kind].plural)]


def _condition(obj: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in (obj.get("status") or {}).get("conditions") or [] if c.get("type") == type_), {})


def _retained(index: dict[str, Any]) -> list[dict[str, Any]]:
    return [v for v in (index.get("status") or {}).get("versions") or [] if v.get("state") in RETAINED_STATES]


def _ns(obj: dict[str, Any]) -> str:
    return str(obj["metadata"].get("namespace", ""))


# -- commands -------------------------------------------------------------------------------------


def _hint(line: str) -> None:
    print(line, file=sys.stderr)


def _objects(api: Api, namespace: str, args: argparse.Namespace, ref: str | None, kinds: tuple[str, ...]) -> list[Any]:
    if ref:
        if args.all_namespaces:
            raise PluginError("a resource cannot be retrieved by name across all namespaces")
        objects = [_find(api, namespace, ref, kinds)]
        _hint_unwatched(objects)
        return objects
    objects = _list(api, None if args.all_namespaces else namespace, kinds)
    if not objects and args.output in ("", "wide"):
        _hint("No resources found" + ("." if args.all_namespaces else f" in {namespace} namespace."))
    _hint_unwatched(objects)
    return objects


def _hint_unwatched(objects: Sequence[dict[str, Any]]) -> None:
    """Resources none of which has any status: the operator never saw them (kubectl would just show dashes)."""
    by_ns: dict[str, list[dict[str, Any]]] = {}
    for obj in objects:
        by_ns.setdefault(_ns(obj), []).append(obj)
    for ns, found in sorted(by_ns.items()):
        if not any(o.get("status") for o in found):
            what = (
                f"{found[0]['kind']}/{found[0]['metadata']['name']}"
                if len(found) == 1
                else f"the {len(found)} resources"
            )
            _hint(WATCH_HINT.format(what=what, ns=ns, has="has" if len(found) == 1 else "have"))


def _print_objects(objects: list[dict[str, Any]], output: str, single: bool) -> list[str] | None:
    """-o json|yaml: the objects as `kubectl get -o` prints them (one object, or a List)."""
    if output not in ("json", "yaml"):
        return None
    doc = (
        objects[0]
        if single
        else {"apiVersion": "v1", "kind": "List", "items": objects, "metadata": {"resourceVersion": ""}}
    )
    if output == "json":
        return json.dumps(doc, indent=4).splitlines()
    return yaml.safe_dump(doc, sort_keys=False).splitlines()


def status(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    objects = _objects(api, namespace, args, args.name, ORDER)
    if (printed := _print_objects(objects, args.output, bool(args.name))) is not None:
        return printed
    wide = args.output == "wide"
    header = ("KIND", "NAME", "READY", "PHASE", "REASON", *(("SINCE", "GENERATION") if wide else ()), "MESSAGE")
    rows = [(("NAMESPACE",) if args.all_namespaces else ()) + header]
    for obj in objects:
        ready = _condition(obj, "Ready")
        # What a person needs first: a degradation, else the work under way, else readiness itself.
        why = next((c for t in ("Degraded", "Progressing") if (c := _condition(obj, t)).get("status") == "True"), ready)
        meta, state = obj["metadata"], obj.get("status") or {}
        seen = f"{state.get('observedGeneration', '-')}/{meta.get('generation', '-')}"
        rows.append(
            (
                *((_ns(obj),) if args.all_namespaces else ()),
                obj["kind"],
                meta["name"],
                ready.get("status", "-"),
                state.get("phase") or "-",
                why.get("reason", "-"),
                *((why.get("lastTransitionTime", "-"), seen) if wide else ()),
                why.get("message", ""),
            )
        )
    return _table(rows)


def last_probe(index: dict[str, Any], version: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """A version's latest probe, and whose it is: `live` (status.probe, the live version's
    periodic probe) when that is the newer, else `gate` (the version's own, from its cut-over gate)."""
    own = version.get("probe") or {}
    live = (index.get("status") or {}).get("probe") or {}
    if live.get("version") == version["version"] and live.get("checkedAt", "") >= own.get("checkedAt", ""):
        return live, "live"
    return own, "gate" if own else "-"


def versions(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    indexes = _objects(api, namespace, args, args.index, ("EmbeddingIndex",))
    if (printed := _print_objects(indexes, args.output, bool(args.index))) is not None:
        return printed
    wide = args.output == "wide"
    where = (("NAMESPACE",) if args.all_namespaces else ()) + (() if args.index else ("INDEX",))
    extra = ("MRR@10", "NDCG@10", "TABLE") if wide else ()
    rows = [(*where, "VERSION", "STATE", "ROWS", "RECALL", "GATE", "PROBED", "PROBE", *extra, "MODEL")]
    for index in indexes:
        at = ((_ns(index),) if args.all_namespaces else ()) + (() if args.index else (index["metadata"]["name"],))
        for v in (index.get("status") or {}).get("versions") or []:
            probe, whose = last_probe(index, v)
            recall = f"{probe['recallAtK']:.4f}@{probe['k']}" if probe else "-"
            gate = "-" if probe.get("passed") is None else ("pass" if probe["passed"] else "fail")
            scores = (_score(probe, "mrrAt10"), _score(probe, "ndcgAt10"), v.get("table", "-")) if wide else ()
            rows.append(
                (
                    *at,
                    f"v{v['version']}",
                    v["state"],
                    str(v.get("rows", 0)),
                    recall,
                    gate,
                    probe.get("checkedAt", "-"),
                    whose,
                    *scores,
                    v.get("model", ""),
                )
            )
    return _table(rows)


def _score(probe: dict[str, Any], key: str) -> str:
    return f"{probe[key]:.4f}" if probe.get(key) is not None else "-"


def pin(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    kept = [v["version"] for v in _retained(index)]
    if args.version not in kept:
        raise PluginError(
            f"{index['metadata']['name']} keeps {', '.join(f'v{v}' for v in kept) or 'no version'}: "
            f"v{args.version} cannot be served"
        )
    api.patch(index, {"spec": {"pinnedVersion": args.version}})
    return [f"{index['metadata']['name']} pinned to v{args.version}: the operator cuts over to it"]


def unpin(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    api.patch(index, {"spec": {"pinnedVersion": None}})
    return [f"{index['metadata']['name']} unpinned: new models are cut over again when they pass the gate"]


def rollback(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    live = (index.get("status") or {}).get("liveVersion")
    older = sorted((v["version"] for v in _retained(index) if live is None or v["version"] < live), reverse=True)
    to = args.to if args.to is not None else (older[0] if older else None)
    if to is None:
        raise PluginError(f"{index['metadata']['name']} keeps no version before v{live} to roll back to")
    args.version = to
    return pin(api, namespace, args)


AGAIN = {
    "EmbeddingDataset": "prepared",
    "FineTuneJob": "trained",
    "EmbeddingIndex": "re-embedded into a new version, probed and cut over if it passes",
}


def dependents(obj: dict[str, Any], others: Sequence[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """The resources that read `obj`'s result, directly or through one another (an index following a
    FineTuneJob trained on a dataset): each runs again when `obj` does."""
    reached = {(obj["kind"], obj["metadata"]["name"])}
    grown = True
    while grown:
        grown = False
        for other in others:
            key = (other["kind"], other["metadata"]["name"])
            if key not in reached and reached.intersection(references(other)):
                reached.add(key)
                grown = True
                yield other


def rerun(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    obj = _find(api, namespace, args.name)
    # Listed before the write, so that a user who may not list them learns it before anything runs.
    users = [] if obj["kind"] == "EmbeddingIndex" else list(dependents(obj, _list(api, namespace, ORDER[1:])))
    api.patch(obj, {"metadata": {"annotations": {RERUN_ANNOTATION: times.now()}}})
    lines = [f"{obj['kind']}/{obj['metadata']['name']} will be {AGAIN[obj['kind']]} again"]
    if users:
        lines[0] += f", and with it these {len(users)}, which use it:"
        lines += [f"  {o['kind']}/{o['metadata']['name']} will be {AGAIN[o['kind']]} again" for o in users]
    return lines


def probe(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    api.patch(index, {"metadata": {"annotations": {PROBE_ANNOTATION: times.now()}}})
    return [f"{index['metadata']['name']}: its live version will be probed now (see `kubectl embedops status`)"]


def sync(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    if not ((index.get("spec") or {}).get("source") or {}).get("table"):
        raise SystemExit(f"error: {args.index} has no source.table to sync (a dataset's corpus is fixed)")
    api.patch(index, {"metadata": {"annotations": {SYNC_ANNOTATION: times.now()}}})
    return [f"{index['metadata']['name']}: its live version will be synced with its table now (status.sync)"]


QUERYING = "docs/operator.md, Querying an index"


def search(api: Api, namespace: str, args: argparse.Namespace) -> list[str]:
    """The index's query Service embeds the query with the live version's model and searches the view."""
    index = _find(api, namespace, args.index, ("EmbeddingIndex",))
    name, spec = index["metadata"]["name"], index.get("spec") or {}
    wanted = spec.get("serving")
    if wanted is None:  # `serving: {}` is serving with every default
        raise PluginError(f"spec.serving is not set: the operator serves no query model for {name} ({QUERYING})")
    if wanted.get("engine") == "tei":
        raise PluginError(
            f"engine tei has no /search: {name}'s query Service serves embeddings only (TEI's /embed); "
            f"embed the query there and search the view in SQL, or set spec.serving.engine: embedops ({QUERYING})"
        )
    if not 1 <= args.k <= SEARCH_MAX_K:
        raise PluginError(f"-k must be from 1 to {SEARCH_MAX_K}")
    service = serving.service_name(name)  # as the operator names it (a long name is cut to fit)
    code, answer = api.proxy_post(namespace, service, "search", {"query": args.query, "k": args.k})
    if code == 200 and isinstance(answer, dict):
        target = spec.get("target") or {}
        view = answer.get("view") or f"{target.get('schema', 'public')}.{target.get('name', '')}"
        _hint(f"# {view} v{answer.get('version')} ({answer.get('model_fingerprint')})")
        return [f"{hit['id']}\t{float(hit['distance']):.6f}" for hit in answer.get("hits") or []]
    raise _proxy_error(code, answer, service, namespace)


def _proxy_error(code: int, answer: Any, service: str, namespace: str) -> PluginError:
    """What a refused search means: the API server's own answers are a Status; the query server's carry error_type."""
    body = answer if isinstance(answer, dict) else {}
    from_server = body.get("kind") == "Status"  # the API server (or its proxy) answered, not the query server
    message = str(body.get("message") or body.get("error") or answer or f"HTTP {code}")
    if code == 401:
        return PluginError("You must be logged in to the server (Unauthorized)")
    if code == 503 and (from_server or "no endpoints" in message):
        return PluginError(f"no Ready pod behind Service {service} yet: try again once one is ({message})")
    if code == 409 and body.get("error_type") == "Conflict":
        return PluginError(
            f"Service {service} and the view disagree: {message}; a cut-over is in flight, retry in a moment"
        )
    if code == 404 and from_server:
        return ServerError(f"(NotFound): Service {service} is not in namespace {namespace}: {message}")
    if code == 404:
        return PluginError(f"the server behind Service {service} has no /search (started without --search-target)")
    if from_server:
        return ServerError(f"({body.get('reason') or code}): {message}")
    return PluginError(f"Service {service} answered {code}: {message}")


def _table(rows: Sequence[tuple[str, ...]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    # Every column but the last is padded: widths stop one short of a row, on purpose.
    return ["   ".join([*(c.ljust(w) for c, w in zip(r, widths, strict=False)), r[-1]]).rstrip() for r in rows]


# -- arguments ------------------------------------------------------------------------------------


class Parser(argparse.ArgumentParser):
    """Usage errors as kubectl writes them: `error: ...`, where to look, exit code 1."""

    def error(self, message: str) -> NoReturn:
        self.exit(1, f"error: {message}\nSee '{self.prog} --help' for usage.\n")


def _globals(reader: bool) -> Parser:
    """kubectl's global flags, accepted before and after the command: defaults are SUPPRESS so that
    the command's parser does not overwrite what was given before it."""
    flags = Parser(add_help=False, argument_default=argparse.SUPPRESS)
    flags.add_argument("-n", "--namespace", help="namespace (default: the kubeconfig context's)")
    flags.add_argument("--context", help="the kubeconfig context to use")
    flags.add_argument("--kubeconfig", help="path to the kubeconfig file (default: $KUBECONFIG, ~/.kube/config)")
    if reader:
        flags.add_argument("-A", "--all-namespaces", action="store_true", help="in every namespace")
        flags.add_argument("-o", "--output", choices=("json", "yaml", "wide"), help="json, yaml or wide")
    return flags


def build_parser() -> argparse.ArgumentParser:
    flags, reader = _globals(False), _globals(True)
    parser = Parser(prog="kubectl embedops", description=__doc__.split("\n\n")[0], parents=[reader])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)

    def command(name: str, summary: str, *, reads: bool = False) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=summary, parents=[reader if reads else flags])

    command("status", "Ready, phase and why, of every resource or one", reads=True).add_argument("name", nargs="?")
    command("versions", "an index's (or every index's) versions and last probes", reads=True).add_argument(
        "index", nargs="?"
    )
    p = command("pin", "serve exactly this retained version")
    p.add_argument("index")
    p.add_argument("version", type=int)
    command("unpin", "follow new models again").add_argument("index")
    p = command("rollback", "pin the version before the live one")
    p.add_argument("index")
    p.add_argument("--to", type=int, help="this retained version instead")
    command("rerun", "run a resource's work again (and all that uses it)").add_argument("name")
    command("probe", "probe an index's live version now").add_argument("index")
    command("sync", "sync an index's live version with its source table now").add_argument("index")
    p = command("search", "the k nearest rows to a query, from the index's query Service (spec.serving)")
    p.add_argument("index")
    p.add_argument("query", help="the query text")
    p.add_argument("-k", type=int, default=10, help=f"rows to return, 1 to {SEARCH_MAX_K} (default 10)")
    return parser


def parse(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = build_parser()
    args = parser.parse_args(argv)
    given = vars(args)
    if args.command not in READERS and ("all_namespaces" in given or "output" in given):
        parser.error(f"-A and -o apply to {' and '.join(READERS)} only, not {args.command}")
    for key, default in (("namespace", None), ("context", None), ("kubeconfig", None)):
        given.setdefault(key, default)
    given.setdefault("all_namespaces", False)
    given.setdefault("output", "")
    return args


COMMANDS = {
    "status": status,
    "versions": versions,
    "pin": pin,
    "unpin": unpin,
    "rollback": rollback,
    "rerun": rerun,
    "probe": probe,
    "sync": sync,
    "search": search,
}


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    try:
        api, namespace = connect(args.kubeconfig, args.context)
        for line in COMMANDS[args.command](api, args.namespace or namespace, args):
            print(line)
    except ServerError as err:
        print(f"Error from server {err}", file=sys.stderr)
        return 1
    except PluginError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

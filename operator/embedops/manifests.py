"""Reading embedops manifests from YAML files or folders, as `kubectl apply -f` would.

Documents of other kinds in the same files (a workspace claim, a Secret) are passed over: they
are for kubectl.

A manifest is input from anywhere (a colleague's branch, a generated file), so what kubectl
refuses is refused here before anything is built from it, each in one line naming the file:
- text that is not UTF-8 (kubectl reads bytes as UTF-8);
- "excessive aliasing": go-yaml, which kubectl parses with (sigs.k8s.io/yaml), counts the nodes
  an alias expands to and refuses a document where more than a share of its nodes come from
  aliases (99% up to 400,000 nodes, falling to 10% at 4,000,000). The same rule is applied here
  to the parser's events, which never expand an alias, so a "billion laughs" is refused in
  milliseconds instead of filling the memory;
- nesting deeper than MAX_DEPTH (PyYAML builds documents recursively: deeper would be a
  RecursionError);
- label and annotation keys, and label values, that the API server rejects.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from embedops.api.kinds import GROUP, ORDER, InvalidResource, Resource, parse_manifest

# Far deeper than any Kubernetes object (an embedops spec nests 6 levels), far below the
# interpreter's recursion limit, which PyYAML's composer reaches at about 490 levels.
MAX_DEPTH = 100
# go-yaml's bounds (yaml.v2 and v3 decode.go, allowedAliasRatio).
_ALIAS_RATIO_LOW, _ALIAS_RATIO_HIGH = 400_000, 4_000_000


@dataclass
class LoadedResource:
    resource: Resource
    path: Path  # the file it came from; relative paths in its spec resolve against path.parent

    @property
    def base_dir(self) -> Path:
        return self.path.parent


class _Refused(ValueError):
    """A file kubectl would refuse as a whole; the message is the line to show after its name."""


def _ours(doc: object) -> bool:
    """An embedops document (or one that means to be: one of its kinds, or its API group)."""
    if not isinstance(doc, dict):
        return True
    group = str(doc.get("apiVersion") or "").split("/")[0]
    return doc.get("kind") in ORDER or group == GROUP


def _files(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.suffix in {".yaml", ".yml", ".json"} and p.is_file())
    if target.exists():
        return [target]  # a file, or a pipe as kubectl reads one: `-f <(helm template ...)`, `-f /dev/stdin`
    raise FileNotFoundError(f"{target}: no such file or folder")


def _text(path: Path) -> str:
    """The file as text; _Refused when it cannot be read or is not UTF-8."""
    try:
        data = path.read_bytes()
    except OSError as err:
        raise _Refused(err.strerror or str(err)) from None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data.count(b"\n", 0, err.start) + 1
        raise _Refused(
            f"not UTF-8 (byte 0x{data[err.start]:02x} on line {line}); kubectl reads manifests as UTF-8: "
            "save the file in that encoding"
        ) from None


def _allowed_alias_ratio(decoded: int) -> float:
    if decoded <= _ALIAS_RATIO_LOW:
        return 0.99
    if decoded >= _ALIAS_RATIO_HIGH:
        return 0.10
    return 0.99 - 0.89 * (decoded - _ALIAS_RATIO_LOW) / (_ALIAS_RATIO_HIGH - _ALIAS_RATIO_LOW)


class _Expansion:
    """Go-yaml's aliasing rule and MAX_DEPTH over one stream's events, counting without expanding.

    A node's expanded size is known when it ends, so an alias adds its anchor's size: the
    counts are go-yaml's (each node decoded, and those decoded inside an alias), and checking
    them after each alias is checking them at every node, since between aliases the share of
    aliased nodes only falls.
    """

    def __init__(self) -> None:
        self.document = 0
        self._reset()

    def _reset(self) -> None:
        self.sizes: dict[str, int] = {}  # anchor -> nodes its value expands to
        self.open: list[list[Any]] = []  # collections not ended yet: [anchor, nodes so far]
        self.decoded = self.aliased = 0

    def start_document(self) -> None:
        self.document += 1
        self._reset()  # anchors, and go-yaml's counts, are per document

    def _count(self, size: int) -> None:
        self.decoded += size
        self._grow_parent(size)

    def _grow_parent(self, size: int) -> None:
        if self.open:
            self.open[-1][1] += size

    def alias(self, anchor: str) -> None:
        if any(frame[0] == anchor for frame in self.open):
            raise _Refused(f"anchor &{anchor} contains itself (document {self.document})")
        size = self.sizes.get(anchor)
        if size is None:
            return  # an undefined alias: the parser's own error says so
        self._count(1 + size)
        self.aliased += size
        a, d = self.aliased, self.decoded
        if a > 100 and d > 1000 and a / d > _allowed_alias_ratio(d):
            raise _Refused(f"excessive aliasing (document {self.document}), as kubectl refuses it")

    def scalar(self, anchor: str | None) -> None:
        self._count(1)
        if anchor is not None:
            self.sizes[anchor] = 1

    def start(self, anchor: str | None) -> None:
        self.decoded += 1
        self.open.append([anchor, 1])
        if len(self.open) > MAX_DEPTH:
            raise _Refused(f"nested deeper than {MAX_DEPTH} levels (document {self.document})")

    def end(self) -> None:
        anchor, size = self.open.pop()
        if anchor is not None:
            self.sizes[anchor] = size
        self._grow_parent(size)  # its nodes are decoded already


def _check_events(events: Iterable[yaml.Event]) -> None:
    expansion = _Expansion()
    for event in events:
        match event:
            case yaml.DocumentStartEvent():
                expansion.start_document()
            case yaml.AliasEvent():
                expansion.alias(str(event.anchor))
            case yaml.ScalarEvent():
                expansion.scalar(event.anchor)
            case yaml.CollectionStartEvent():
                expansion.start(event.anchor)
            case yaml.CollectionEndEvent():
                expansion.end()


def _documents(path: Path) -> list[Any]:
    """The documents of one file; _Refused for what kubectl would refuse, yaml.YAMLError for bad YAML."""
    text = _text(path)
    _check_events(yaml.parse(text, Loader=yaml.SafeLoader))
    return [d for d in yaml.safe_load_all(text) if d is not None]


# Kubernetes' qualified names (apimachinery's IsQualifiedName) and label values (IsValidLabelValue).
_NAME_PART = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_NAME_PART_WORDS = (
    "must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character"
)


def _key_problem(key: str) -> str | None:
    """Why the API server rejects a label or annotation key, or None."""
    prefix, slash, name = key.rpartition("/")
    if slash and "/" in prefix:
        return "a qualified name must have at most one '/'"
    if slash and (len(prefix) > 253 or not _DNS_SUBDOMAIN.fullmatch(prefix)):
        return "prefix must be a lower-case DNS subdomain (at most 253 characters)"
    if not name:
        return "name part must be non-empty"
    if len(name) > 63:
        return "name part must be at most 63 characters"
    if not _NAME_PART.fullmatch(name):
        return f"name part {_NAME_PART_WORDS}"
    return None


def _metadata_problems(doc: dict[str, Any]) -> list[str]:
    """Labels and annotations as the API server checks them (the models only know they are strings)."""
    meta = doc.get("metadata")
    if not isinstance(meta, dict):
        return []  # parse_manifest says what is wrong with it
    problems = []
    for field in ("labels", "annotations"):
        entries = meta.get(field)
        if not isinstance(entries, dict):
            continue
        for key, value in entries.items():
            if why := _key_problem(str(key)):
                problems.append(f"metadata.{field}: {str(key)!r}: {why}")
            elif field == "labels" and isinstance(value, str) and value and not _label_value_ok(value):
                problems.append(
                    f"metadata.labels: {key}: value {value!r} must be empty or consist of alphanumeric "
                    "characters, '-', '_' or '.', start and end with one, and be at most 63 characters"
                )
    return problems


def _label_value_ok(value: str) -> bool:
    return len(value) <= 63 and _NAME_PART.fullmatch(value) is not None


def _parse(doc: Any, where: str) -> Resource:
    resource = parse_manifest(doc, where=where)
    if problems := _metadata_problems(doc):
        raise InvalidResource(f"{where} ({resource.kind.kind}/{resource.name})", problems)
    return resource


def _resolved(path: Path) -> Path:
    # A pipe's /dev/fd/N resolves to "pipe:[inode]": its folder is the one it was named in.
    return path.resolve() if path.is_file() else path.absolute()


def load(targets: list[Path]) -> list[LoadedResource]:
    """Parse every document of every file; collect all errors before raising so the user sees them at once."""
    loaded: list[LoadedResource] = []
    errors: list[str] = []
    for target in targets:
        for path in _files(target):
            try:
                docs = _documents(path)
            except _Refused as err:
                errors.append(f"{path}: {err}")
                continue
            except yaml.YAMLError as err:
                errors.append(f"{path}: not valid YAML: {err}")
                continue
            for i, doc in enumerate(docs):
                if not _ours(doc):
                    continue  # a PersistentVolumeClaim, a Secret...: for kubectl, not for embedops
                try:
                    loaded.append(LoadedResource(_parse(doc, where=f"{path}[{i}]"), _resolved(path)))
                except InvalidResource as err:
                    errors.append(str(err))
    keys = [r.resource.key for r in loaded]
    errors += [f"{key}: defined more than once" for key in sorted({k for k in keys if keys.count(k) > 1})]
    if errors:
        raise InvalidResource("manifests", errors)
    # A dataset made from another's corpus (source.datasetRef) after the datasets it may need.
    return sorted(
        loaded,
        key=lambda r: (
            ORDER.index(r.resource.kind.kind),
            r.resource.kind.kind == "EmbeddingDataset" and r.resource.spec.source.dataset_ref is not None,
            r.resource.name,
        ),
    )

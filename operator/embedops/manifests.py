"""Reading embedops manifests from YAML files or folders, as `kubectl apply -f` would.

Documents of other kinds in the same files (a workspace claim, a Secret) are passed over: they
are for kubectl.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from embedops.api.kinds import GROUP, ORDER, InvalidResource, Resource, parse_manifest


@dataclass
class LoadedResource:
    resource: Resource
    path: Path  # the file it came from; relative paths in its spec resolve against path.parent

    @property
    def base_dir(self) -> Path:
        return self.path.parent


def _ours(doc: object) -> bool:
    """An embedops document (or one that means to be: one of its kinds, or its API group)."""
    if not isinstance(doc, dict):
        return True
    group = str(doc.get("apiVersion") or "").split("/")[0]
    return doc.get("kind") in ORDER or group == GROUP


def _files(target: Path) -> list[Path]:
    if target.is_dir():
        return sorted(p for p in target.iterdir() if p.suffix in {".yaml", ".yml", ".json"} and p.is_file())
    if target.is_file():
        return [target]
    raise FileNotFoundError(f"{target}: no such file or folder")


def load(targets: list[Path]) -> list[LoadedResource]:
    """Parse every document of every file; collect all errors before raising so the user sees them at once."""
    loaded: list[LoadedResource] = []
    errors: list[str] = []
    for target in targets:
        for path in _files(target):
            try:
                docs = list(yaml.safe_load_all(path.read_text(encoding="utf-8")))
            except yaml.YAMLError as err:
                errors.append(f"{path}: not valid YAML: {err}")
                continue
            for i, doc in enumerate(d for d in docs if d is not None):
                if not _ours(doc):
                    continue  # a PersistentVolumeClaim, a Secret...: for kubectl, not for embedops
                try:
                    loaded.append(LoadedResource(parse_manifest(doc, where=f"{path}[{i}]"), path.resolve()))
                except InvalidResource as err:
                    errors.append(str(err))
    keys = [r.resource.key for r in loaded]
    errors += [f"{key}: defined more than once" for key in sorted({k for k in keys if keys.count(k) > 1})]
    if errors:
        raise InvalidResource("manifests", errors)
    return sorted(loaded, key=lambda r: (ORDER.index(r.resource.kind.kind), r.resource.name))

"""Local mode: run the resources of a manifest set end to end on this machine.

`embedops run -f DIR` does what the operator does in a cluster, in the same order and
with the same workers and status structure, but in-process: datasets are prepared,
fine-tune jobs trained, indexes embedded into pgvector, probed, cut over and measured.
Without `--dsn`, an embedded PostgreSQL + pgvector server keeps its data in the state
folder, so a second run finds the versions of the first (and re-runs only what changed).

State folder layout (default `.embedops/`):
    postgres/                          embedded server data
    <namespace>/<plural>/<name>/              worker output (prepared data, model, checkpoints)
    <namespace>/<plural>/<name>.status.json   the status the operator would write

One database serves the run: `--dsn`, or the embedded server. A Postgres dataset source and
every index use it (in a cluster each names its own Secret).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from embedops import modelzoo
from embedops import status as statuses
from embedops.api.common import BaseStatus
from embedops.api.dataset import EmbeddingDatasetStatus
from embedops.api.finetune import FineTuneJobStatus
from embedops.api.index import EmbeddingIndexStatus
from embedops.manifests import LoadedResource

log = logging.getLogger(__name__)


class StepFailed(RuntimeError):
    def __init__(self, reason: str, message: str):
        self.reason = reason
        super().__init__(message)


def _hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


@dataclass
class Outcome:
    loaded: LoadedResource
    status: BaseStatus
    ok: bool
    reused: bool = False


@dataclass
class LocalRunner:
    state_dir: Path
    dsn: str | None = None
    device: str | None = None
    outcomes: dict[str, Outcome] = field(default_factory=dict)
    _server: Any = None

    # -- plumbing -------------------------------------------------------------------------

    def _dir(self, loaded: LoadedResource) -> Path:
        r = loaded.resource
        return self.state_dir / r.namespace / r.kind.plural / r.name

    def _status_path(self, loaded: LoadedResource) -> Path:
        return self._dir(loaded).with_name(loaded.resource.name + ".status.json")

    def _save(self, loaded: LoadedResource, status: BaseStatus, inputs: str | None) -> None:
        path = self._status_path(loaded)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"inputs": inputs, "status": status.to_wire()}, indent=2) + "\n", encoding="utf-8")

    def _previous(self, loaded: LoadedResource, status_cls: type[BaseStatus], inputs: str) -> BaseStatus | None:
        """The saved status when it was computed from the same inputs and is Ready."""
        path = self._status_path(loaded)
        if not path.is_file():
            return None
        saved = json.loads(path.read_text(encoding="utf-8"))
        if saved.get("inputs") != inputs:
            return None
        status = status_cls.model_validate(saved["status"])
        ready = status.condition("Ready")
        return status if ready and ready.status == "True" else None

    def database(self) -> str:
        if self.dsn:
            return self.dsn
        if self._server is None:
            from embedops.store import embedded

            self._server = embedded.start(self.state_dir / "postgres", keep=True)
        return self._server.dsn

    def close(self) -> None:
        if self._server is not None:
            self._server.stop()
            self._server = None

    def _dependency(self, loaded: LoadedResource, kind: str, name: str) -> Outcome:
        key = f"{kind}/{loaded.resource.namespace}/{name}"
        outcome = self.outcomes.get(key)
        if outcome is None:
            raise StepFailed("DependencyNotFound", f"{key} is not among the applied manifests")
        if not outcome.ok:
            raise StepFailed("DependencyNotReady", f"{key} is not Ready")
        return outcome

    # -- the three kinds ------------------------------------------------------------------

    def run(self, resources: list[LoadedResource]) -> dict[str, Outcome]:
        steps = {"EmbeddingDataset": self._dataset, "FineTuneJob": self._finetune, "EmbeddingIndex": self._index}
        for loaded in resources:
            kind = loaded.resource.kind
            log.info("%s: reconciling", loaded.resource.key)
            try:
                outcome = steps[kind.kind](loaded)
            except StepFailed as err:
                status = statuses.failed(kind.status_model, err.reason, str(err), self._generation(loaded))
                self._save(loaded, status, None)
                outcome = Outcome(loaded, status, ok=False)
            ready = outcome.status.condition("Ready")
            log.info("%s: Ready=%s %s", loaded.resource.key, ready.status if ready else "?",
                     ready.message if ready else "")
            self.outcomes[loaded.resource.key] = outcome
        return self.outcomes

    @staticmethod
    def _generation(loaded: LoadedResource) -> int:
        return int(loaded.resource.metadata.get("generation") or 1)

    def _dataset(self, loaded: LoadedResource) -> Outcome:
        from embedops.workers import prepare

        spec, out = loaded.resource.spec, self._dir(loaded)
        inputs = _hash(spec.to_wire(), _source_stamp(spec, loaded.base_dir))
        if (prev := self._previous(loaded, EmbeddingDatasetStatus, inputs)) is not None:
            return Outcome(loaded, prev, ok=True, reused=True)
        config = prepare.Config(spec=spec, base_dir=loaded.base_dir, output_dir=out)
        try:
            result = prepare.run(config, dsn=self.database() if spec.source.postgres else None)
        except (ValueError, FileNotFoundError) as err:
            raise StepFailed("InvalidData", str(err)) from err
        status = statuses.dataset_prepared(result, self._generation(loaded))
        self._save(loaded, status, inputs)
        return Outcome(loaded, status, ok=True)

    def _finetune(self, loaded: LoadedResource) -> Outcome:
        from embedops.workers import train

        spec, out = loaded.resource.spec, self._dir(loaded)
        dataset = self._dependency(loaded, "EmbeddingDataset", spec.dataset_ref.name)
        inputs = _hash(spec.to_wire(), dataset.status.fingerprint, self.device)
        if (prev := self._previous(loaded, FineTuneJobStatus, inputs)) is not None:
            return Outcome(loaded, prev, ok=True, reused=True)
        stamp = out / "inputs.txt"
        if stamp.is_file() and stamp.read_text() != inputs:
            # Checkpoints of other inputs must not be resumed from.
            import shutil

            shutil.rmtree(out)
        out.mkdir(parents=True, exist_ok=True)
        stamp.write_text(inputs)
        config = train.Config(spec=spec, dataset_dir=Path(dataset.status.location), output_dir=out,
                              base_dir=loaded.base_dir, device=self.device)
        try:
            result = train.run(config)
        except ValueError as err:
            raise StepFailed("TrainingFailed", str(err)) from err
        status = statuses.finetune_finished(result, spec, self._generation(loaded))
        self._save(loaded, status, inputs)
        return Outcome(loaded, status, ok=status.phase == "Succeeded")

    def _index(self, loaded: LoadedResource) -> Outcome:
        status = self._reconcile_index(loaded)
        self._save(loaded, status, None)
        ready = status.condition("Ready")
        return Outcome(loaded, status, ok=bool(ready and ready.status == "True"))

    def _index_inputs(self, loaded: LoadedResource) -> tuple[str, str, Path | None, dict[str, Any]]:
        """The model (path, catalog name), the corpus dataset folder and the probe set of an index."""
        spec = loaded.resource.spec
        if spec.model.fine_tune_job_ref is not None:
            job = self._dependency(loaded, "FineTuneJob", spec.model.fine_tune_job_ref.name)
            model, model_name = job.status.model.location, f"FineTuneJob/{spec.model.fine_tune_job_ref.name}"
        else:
            model = spec.model.name
            if not modelzoo.is_bundled(model) and not Path(model).is_absolute():
                model = str(loaded.base_dir / model)
            model_name = spec.model.name
        dataset_dir = None
        if spec.source.dataset_ref is not None:
            dataset_dir = Path(self._dependency(loaded, "EmbeddingDataset", spec.source.dataset_ref.name).status.location)
        if spec.probe.path:
            probe_set = {"path": loaded.base_dir / spec.probe.path}
        elif spec.probe.dataset_ref is not None:
            dep = self._dependency(loaded, "EmbeddingDataset", spec.probe.dataset_ref.name)
            probe_set = {"dataset_dir": Path(dep.status.location)}
        elif dataset_dir is not None:
            probe_set = {"dataset_dir": dataset_dir}
        else:
            raise StepFailed("NoProbeSet", "spec.probe: set probe.path or probe.datasetRef (a table source has no held-out queries)")
        return model, model_name, dataset_dir, probe_set

    def _reconcile_index(self, loaded: LoadedResource) -> EmbeddingIndexStatus:
        """Build a version for a new model, probe it, cut over if it passes, then measure the live one."""
        from embedops.workers import drift, embed, publish

        spec, generation = loaded.resource.spec, self._generation(loaded)
        model, model_name, dataset_dir, probe_set = self._index_inputs(loaded)
        dsn = self.database()
        try:
            # A finished version of this model is reused, so a rolled-back model is not rebuilt.
            built = embed.run(embed.Config(
                target=spec.target, source=spec.source, dataset_dir=dataset_dir, model=model,
                model_name=model_name, ann=spec.ann, embedding=spec.embedding, shard=0, shard_count=1,
                finalize=True, device=self.device, reuse=True,
            ), dsn=dsn)
            if not built.reused:
                log.info("%s: v%d built, %d rows at %.0f rows/s", loaded.resource.key, built.version, built.rows,
                         built.rows_per_second)
            published = publish.run(publish.Config(
                target=spec.target, version=built.version, model=model, probe=spec.probe,
                ef_search=spec.ann.ef_search, probes=spec.ann.probes, pinned_version=spec.pinned_version,
                keep_versions=spec.keep_versions, device=self.device, **probe_set,
            ), dsn=dsn)
            if published.dropped:
                log.info("%s: dropped versions %s beyond keepVersions", loaded.resource.key, published.dropped)
            live = next((v for v in published.versions if v.state == "Live"), None)
            measured = None
            # Drift is measured in the live version's own embedding space, so only with its model.
            if live is not None and spec.drift.enabled and live.version == built.version:
                measured = drift.run(drift.Config(
                    target=spec.target, version=live.version, model=model, source=spec.source,
                    dataset_dir=dataset_dir, sample_size=spec.drift.sample_size,
                    threshold=spec.drift.threshold, precision=spec.embedding.precision, device=self.device,
                ), dsn=dsn)
        except (ValueError, FileNotFoundError, modelzoo.ModelNotFound) as err:
            raise StepFailed("IndexFailed", str(err)) from err
        return statuses.index_published(spec, published, generation, drift=measured)


def _source_stamp(spec: Any, base_dir: Path) -> list[Any]:
    """Sizes and modification times of a file source, so edited data is prepared again."""
    src = spec.source.beir or spec.source.pairs
    if src is None:
        return []
    root = Path(src.path) if Path(src.path).is_absolute() else base_dir / src.path
    paths = sorted(root.rglob("*")) if root.is_dir() else [root]
    extra = getattr(src, "test_path", None)
    if extra:
        paths.append(Path(extra) if Path(extra).is_absolute() else base_dir / extra)
    return [(str(p.relative_to(base_dir)) if p.is_relative_to(base_dir) else p.name, p.stat().st_size,
             p.stat().st_mtime_ns) for p in paths if p.is_file()]

"""The operator's start-up, without a cluster."""

from __future__ import annotations

import kopf
import pytest

from embedops.handlers import kube, observe, triggers


def test_operator_refuses_to_start_without_its_crds(monkeypatch):
    monkeypatch.setattr(kube, "missing_kinds", lambda: ["FineTuneJob", "EmbeddingIndex"])
    settings = kopf.OperatorSettings()
    with pytest.raises(kopf.PermanentError, match="does not serve FineTuneJob, EmbeddingIndex .*install the CRDs"):
        triggers.configure(settings=settings)
    # Served kinds are resolved at start: no cluster-wide watch of CRDs and namespaces to grant.
    assert settings.scanning.disabled is True
    assert settings.persistence.finalizer == "embedops.dev/finalizer"


def test_operator_without_credentials_stops_with_one_clear_error(monkeypatch, tmp_path):
    monkeypatch.setattr(kube, "_api", None)
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    with pytest.raises(kopf.PermanentError, match=r"no Kubernetes credentials: .*\$KUBECONFIG \(.*missing\)"):
        triggers.configure(settings=kopf.OperatorSettings())


def test_a_pods_progress_lines_become_status_job_progress(caplog):
    import logging

    from embedops import progress

    progress.use_bars(False)
    with caplog.at_level(logging.INFO, logger="embedops.progress"), progress.task("Training steps", total=300) as task:
        task._log_every = 0
        task.extra["loss"] = 0.4321
        task.advance(120)
    log = "\n".join(f"12:00:0{i} INFO embedops.progress: {m}" for i, m in enumerate(caplog.messages))
    got = observe.parse_progress("Loading weights...\n" + log + "\nTraining steps: done, 120 items in 1.0s")
    assert (got.task, got.done, got.total, got.loss) == ("Training steps", 120, 300, 0.4321)
    assert got.rate > 0 and got.eta_seconds is not None
    assert observe.parse_progress("no progress here\n") is None

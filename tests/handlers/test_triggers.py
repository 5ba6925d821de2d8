"""The operator's start-up (embedops.handlers.triggers.configure), without a cluster."""

from __future__ import annotations

import kopf
import pytest

from embedops.handlers import kube, triggers


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


def test_the_storage_warm_up_after_new_crds_is_one_info_line_not_errors():
    """Issue 17, item 11: kopf's ERROR with the whole 503 body, once per kind and namespace, becomes one line."""
    import logging

    from embedops.handlers.triggers import QuietStorageWarmup

    quiet = QuietStorageWarmup()
    body = '{"kind":"Status","message":"storage is (re)initializing","reason":"ServiceUnavailable","code":503}'

    def record(message: str) -> logging.LogRecord:
        return logging.LogRecord("kopf._cogs.clients.watching", logging.ERROR, __file__, 1, message, (), None)

    first, second = record(f"Request failed: {body}"), record(f"Request failed: {body}")
    assert quiet.filter(first) and first.levelno == logging.INFO and "storage" in first.getMessage()
    assert body not in first.getMessage()
    assert not quiet.filter(second), "said once"
    other = record("something else broke")
    assert quiet.filter(other) and other.levelno == logging.ERROR


def test_an_index_in_sync_mode_trigger_is_cleaned_up_on_deletion_whatever_its_policy():
    """Its cleanup Job removes the source table's triggers (and, with Delete only, the tables)."""
    assert triggers._cleans_up({"deletionPolicy": "Delete"})
    assert triggers._cleans_up({"deletionPolicy": "Retain", "sync": {"mode": "trigger"}})
    assert triggers._cleans_up({"sync": {"mode": "trigger"}})
    assert not triggers._cleans_up({"deletionPolicy": "Retain", "sync": {"mode": "diff"}})
    assert not triggers._cleans_up({})

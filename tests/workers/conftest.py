"""Fixtures of the worker tests."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir):
    """The tiny BERT of tests/conftest.py, loaded once a module."""
    from embedops import modelzoo

    return modelzoo.load(str(tiny_model_dir), device="cpu")

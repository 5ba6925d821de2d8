"""The trainer's arguments: the precision a device allows."""

from __future__ import annotations

import pytest

from embedops.workers.training import trainer


def test_fp16_on_cpu_is_refused():
    with pytest.raises(ValueError, match="fp16 needs a CUDA GPU"):
        trainer.precision_flags("fp16", "cpu")
    assert trainer.precision_flags("auto", "cpu") == {"bf16": False, "fp16": False}

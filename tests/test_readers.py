"""The prepare worker's source readers (`workers/readers/`): dispatch by kind and the row checks they share."""

from __future__ import annotations

import pytest

from embedops.api.dataset import DatasetSource


@pytest.mark.parametrize("source, kind", [
    ({"beir": {"path": "beir"}}, "beir"),
    ({"pairs": {"path": "pairs.jsonl"}}, "pairs"),
    ({"postgres": {"table": "pairs"}}, "postgres"),
])
def test_a_source_names_its_kind(source, kind):
    assert DatasetSource.model_validate(source).kind == kind

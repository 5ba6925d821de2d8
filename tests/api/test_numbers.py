"""Numbers in the three specs: floats are finite, integers fit what the API server and the libraries take.

The walk over every spec model is what keeps a new field from slipping by: a float without
FiniteFloat or an integer without an upper bound fails here, not in a training run.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Iterator

import pytest
import yaml
from pydantic import BaseModel, ValidationError

from embedops.api.common import MAX_INT, SEED_MAX
from embedops.api.kinds import KINDS, ORDER, InvalidResource, parse_manifest


def _leaves(model: type[BaseModel], seen: set[type[BaseModel]]) -> Iterator[tuple[type[BaseModel], str, type]]:
    """(model, field, int or float) for every number field reachable from `model` (list items included)."""
    if model in seen:
        return
    seen.add(model)
    for name, field in model.model_fields.items():
        for arg in _types(field.annotation):
            if isinstance(arg, type) and issubclass(arg, BaseModel):
                yield from _leaves(arg, seen)
            elif arg in (int, float):
                yield model, name, arg


def _types(annotation: object) -> Iterator[object]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType, list, typing.Annotated):
        for arg in typing.get_args(annotation)[: 1 if origin is typing.Annotated else None]:
            yield from _types(arg)
    elif origin is None:
        yield annotation


NUMBERS = sorted(
    {leaf for kind in ORDER for leaf in _leaves(KINDS[kind].spec_model, set())}, key=lambda x: (x[0].__name__, x[1])
)


def _value_for(model: type[BaseModel], name: str, value: object) -> object:
    """`value` placed as the field expects it: alone, or as a one-item list."""
    origin = typing.get_origin(model.model_fields[name].annotation)
    return [value] if origin is list else value


def _field_errors(model: type[BaseModel], name: str, value: object) -> list[str]:
    """The messages pydantic gives for `name` (alone in the model) set to `value`."""
    alias = model.model_fields[name].alias or name
    try:
        model.model_validate({alias: _value_for(model, name, value)})
    except ValidationError as err:
        return [e["msg"] for e in err.errors() if e["loc"] and e["loc"][0] == alias]
    return []


def test_the_walk_finds_the_numbers():
    names = {f"{m.__name__}.{n}" for m, n, _ in NUMBERS}
    assert {"TrainingSpec.learning_rate", "LossSpec.scale", "TrainingSpec.batch_size", "SplitSpec.seed"} <= names
    assert "LossSpec.matryoshka_dims" in names  # list items count


@pytest.mark.parametrize("bad", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
@pytest.mark.parametrize(("model", "name"), [(m, n) for m, n, t in NUMBERS if t is float], ids=lambda x: str(x))
def test_every_float_of_the_specs_is_finite(model, name, bad):
    assert _field_errors(model, name, bad), f"{model.__name__}.{name} accepts {bad}"


@pytest.mark.parametrize(("model", "name"), [(m, n) for m, n, t in NUMBERS if t is int], ids=lambda x: str(x))
def test_every_integer_of_the_specs_is_bounded_where_json_and_the_api_server_are_exact(model, name):
    assert _field_errors(model, name, MAX_INT + 1), f"{model.__name__}.{name} accepts 2**53"


def _finetune(spec_yaml: str) -> dict:
    spec = {"datasetRef": {"name": "d"}} | yaml.safe_load(spec_yaml)
    return {"apiVersion": "embedops.dev/v1alpha1", "kind": "FineTuneJob", "metadata": {"name": "j"}, "spec": spec}


@pytest.mark.parametrize(
    ("spec_yaml", "where"),
    [
        ("training: {learningRate: .inf}", "spec.training.learningRate"),
        ("training: {learningRate: .nan}", "spec.training.learningRate"),
        ("loss: {scale: .inf}", "spec.loss.scale"),
        ("loss: {scale: .NaN}", "spec.loss.scale"),
        ("training: {weightDecay: .inf}", "spec.training.weightDecay"),
        ("training: {batchSize: 100000000000000000000000}", "spec.training.batchSize"),
        (f"training: {{seed: {2**64}}}", "spec.training.seed"),
        (f"training: {{seed: {SEED_MAX + 1}}}", "spec.training.seed"),
        ("training: {seed: -1}", "spec.training.seed"),
    ],
)
def test_a_finetune_job_with_a_number_no_library_takes_is_invalid(spec_yaml, where):
    with pytest.raises(InvalidResource) as err:
        parse_manifest(_finetune(spec_yaml))
    assert any(p.startswith(where) for p in err.value.problems), err.value.problems


def test_the_largest_accepted_seed_is_one_numpy_takes():
    import numpy as np

    resource = parse_manifest(_finetune(f"training: {{seed: {SEED_MAX}}}"))
    np.random.seed(resource.spec.training.seed)


def test_schedules_fit_a_datetime():
    manifest = {
        "apiVersion": "embedops.dev/v1alpha1",
        "kind": "EmbeddingIndex",
        "metadata": {"name": "i"},
        "spec": {
            "model": {"name": "m"},
            "source": {"table": {"table": "docs"}},
            "target": {"name": "docs_vec"},
            "probe": {"intervalMinutes": 2**62},
        },
    }
    with pytest.raises(InvalidResource, match="spec.probe.intervalMinutes"):
        parse_manifest(manifest)

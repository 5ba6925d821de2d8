"""Loading manifests: hostile files end in one line naming the file, quickly, as kubectl refuses them."""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import pytest

from embedops import manifests
from embedops.api.kinds import InvalidResource

HEAD = "apiVersion: embedops.dev/v1alpha1\nkind: EmbeddingDataset\n"
DATASET = HEAD + "metadata: {name: d}\nspec: {source: {beir: {path: x}}}\n"


def _problems(path: Path) -> list[str]:
    with pytest.raises(InvalidResource) as err:
        manifests.load([path])
    return err.value.problems


def test_a_latin1_byte_is_one_line_naming_the_file_and_where(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_bytes(DATASET.encode() + b"# caf\xe9\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}: not UTF-8") and "line 5" in problem and "0xe9" in problem


def test_billion_laughs_is_refused_quickly_without_expanding(tmp_path):
    lines = ['    a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    lines += [f"    {c}: &{c} [{', '.join([f'*{p}'] * 9)}]" for p, c in zip("abcdefgh", "bcdefghi", strict=True)]
    path = tmp_path / "lol.yaml"
    path.write_text(HEAD + "metadata:\n  name: d\n  labels:\n" + "\n".join(lines) + "\nspec: {}\n")
    started = time.monotonic()
    [problem] = _problems(path)
    assert time.monotonic() - started < 2
    assert problem.startswith(f"{path}: excessive aliasing")


def test_a_few_aliases_are_fine(tmp_path):
    path = tmp_path / "m.yaml"
    meta = "metadata: {name: d, labels: &l {team: a}, annotations: *l}\n"
    path.write_text(HEAD + meta + "spec: {source: {beir: {path: x}}}\n")
    [loaded] = manifests.load([path])
    assert loaded.resource.metadata["annotations"] == {"team": "a"}


def test_an_anchor_that_contains_itself_is_refused(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + "metadata: {name: d}\nspec: &s {source: *s}\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}: ") and "contains itself" in problem


def test_deep_nesting_is_one_line(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(DATASET + "---\n" + "a: " + "[" * 5000 + "]" * 5000 + "\n")
    [problem] = _problems(path)
    assert problem == f"{path}: nested deeper than {manifests.MAX_DEPTH} levels (document 2)"


@pytest.mark.parametrize(
    ("labels", "message"),
    [
        ("{équipe: a}", "'équipe': name part must consist of alphanumeric characters"),
        ("{'': a}", "'': name part must be non-empty"),
        ("{a/b/c: x}", "'a/b/c': a qualified name must have at most one '/'"),
        ("{Example.COM/a: x}", "'Example.COM/a': prefix must be a lower-case DNS subdomain"),
        ("{team: 'a b'}", "team: value 'a b' must be empty or consist of alphanumeric characters"),
    ],
)
def test_label_keys_and_values_kubernetes_rejects_are_refused(tmp_path, labels, message):
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + f"metadata: {{name: d, labels: {labels}}}\nspec: {{source: {{beir: {{path: x}}}}}}\n")
    [problem] = _problems(path)
    assert problem.startswith(f"{path}[0] (EmbeddingDataset/d): metadata.labels: ") and message in problem, problem


def test_annotation_keys_are_qualified_names_too(tmp_path):
    path = tmp_path / "m.yaml"
    path.write_text(HEAD + "metadata: {name: d, annotations: {'é': x}}\nspec: {source: {beir: {path: x}}}\n")
    [problem] = _problems(path)
    assert problem == (
        f"{path}[0] (EmbeddingDataset/d): metadata.annotations: 'é': name part {manifests._NAME_PART_WORDS}"
    )


def test_a_fifo_is_read_as_kubectl_reads_it(tmp_path):
    fifo = tmp_path / "m.yaml"
    os.mkfifo(fifo)

    def write() -> None:
        with fifo.open("w", encoding="utf-8") as f:
            f.write(DATASET)

    writer = threading.Thread(target=write)
    writer.start()
    [loaded] = manifests.load([fifo])
    writer.join()
    assert loaded.resource.name == "d" and loaded.base_dir == tmp_path


def test_an_unreadable_file_is_one_line(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such file or folder"):
        manifests.load([tmp_path / "missing.yaml"])

"""What every source reader shares: row checks, the report of invalid rows, and the shape of what is read.

Real domain data is messy, and one bad line must not cost a user their whole dataset, nor
may a wrong format pass silently. So every row is validated and bad rows are reported by
file and line and skipped, while a file whose invalid share is too high fails the step.
Readers of every source kind report through one `Issues` and return one `Source`, so the
step after them never knows where the data came from.
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from embedops.api.dataset import ValidationSpec
from embedops.prepared import Doc

INVALID_SAMPLES = 10
Qrels = dict[str, dict[str, int]]

# The characters a text of nothing else is empty of: every one str.isspace() calls whitespace (all in
# the Basic Multilingual Plane), and the zero-width ones it does not (zero-width space, non-joiner and
# joiner, word joiner, BOM, the Mongolian vowel separator) that show nothing either. One definition for
# every source kind: the dataset readers trim with it, and table sources pass it to Postgres's btrim,
# which trims exactly as str.strip(BLANK) does.
BLANK = "".join(c for c in map(chr, range(0x10000)) if c.isspace()) + "\u180e\u200b\u200c\u200d\u2060\ufeff"


def trimmed(text: str) -> str:
    """`text` without the blank characters at its ends: what validation measures, and empty for a blank text."""
    return text.strip(BLANK)


class BadRow(ValueError):
    """A row that fails validation; its message is the reason shown to the user."""


@dataclass
class Issues:
    """Invalid rows by file, to report them and to judge whether a file is wrong as a whole."""

    rows: list[dict[str, object]] = field(default_factory=list)
    seen: Counter[str] = field(default_factory=Counter)
    bad: Counter[str] = field(default_factory=Counter)

    def add(self, file: str, line: int, reason: str) -> None:
        self.rows.append({"file": file, "line": line, "reason": reason})
        self.bad[file] += 1

    def samples(self) -> list[str]:
        return [f"{r['file']}:{r['line']}: {r['reason']}" for r in self.rows[:INVALID_SAMPLES]]

    def check(self, max_fraction: float) -> None:
        for file, total in self.seen.items():
            if total and self.bad[file] / total > max_fraction:
                first = "; ".join(s for s in self.samples() if s.startswith(f"{file}:"))[:600]
                raise ValueError(
                    f"{file}: {self.bad[file]} of {total} rows are invalid, more than "
                    f"validation.maxInvalidFraction={max_fraction} (a wrong format?); first problems: {first}"
                )


@dataclass
class Source:
    """What a reader found, in one shape for all source kinds."""

    corpus: dict[str, Doc]
    queries: dict[str, str]
    train_qrels: Qrels
    test_qrels: Qrels | None  # None: split the train queries
    given_negatives: dict[tuple[str, str], tuple[str, ...]] = field(default_factory=dict)  # (query, doc) -> doc ids
    duplicates: int = 0


def checked_text(row: dict, key: str, rules: ValidationSpec, *, required: bool = True) -> str:
    value = row.get(key)
    if value is None and not required:
        return ""
    if value is None:
        raise BadRow(f"missing field {key!r}")
    if not isinstance(value, str):
        raise BadRow(f"field {key!r} must be a string, got {type(value).__name__}")
    checked_characters(key, value)
    n = len(trimmed(value))
    if n < rules.min_chars and (required or n):
        raise BadRow(
            f"field {key!r} is empty" if n == 0 else f"field {key!r} is shorter than {rules.min_chars} characters"
        )
    if n > rules.max_chars:
        raise BadRow(f"field {key!r} is longer than validation.maxChars={rules.max_chars} ({n} characters)")
    return value


def checked_id(row: dict, key: str) -> str:
    value = row.get(key)
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise BadRow(f"missing field {key!r}" if value is None else f"field {key!r} must be a string")
    if not trimmed(str(value)):
        raise BadRow(f"field {key!r} is empty")
    return checked_characters(key, str(value))


def checked_characters(key: str, value: str) -> str:
    """`value`, unless it holds what would fail later and far from its row.

    Postgres text cannot hold NUL (the index's COPY would fail on every retry), and a lone
    surrogate, which JSON can spell ("\\ud800"), cannot be written as UTF-8.
    """
    if "\0" in value:
        raise BadRow(f"field {key!r} contains a NUL character (U+0000)")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise BadRow(
            f"field {key!r} contains a lone surrogate (U+{ord(value[err.start]):04X}), which is not valid Unicode"
        ) from None
    return value


def lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, line without its ending) of a text file, the one way every reader splits a file.

    A line ends at \\n, \\r\\n or a lone \\r (old Mac exports), as text mode reads them; a BOM is not
    part of the first line (some editors and exports write one). Undecodable bytes are kept, as
    surrogates, so that `valid_utf8` reports them by line rather than U+FFFD hiding them.
    """
    with path.open(encoding="utf-8-sig", errors="surrogateescape", newline="") as f:
        for lineno, line in enumerate(f, 1):
            yield lineno, line.rstrip("\r\n")


def valid_utf8(line: str) -> bool:
    """Whether a line from `lines` was valid UTF-8 (decoding never yields a surrogate; escaping does)."""
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def jsonl_rows(path: Path, name: str, issues: Issues) -> Iterator[tuple[int, dict]]:
    """(line number, object) of each non-blank line that is a JSON object; the others are reported.

    A file with no rows at all fails, naming itself: its emptiness would otherwise surface
    later as rows of other files that refer to it.
    """
    rows = 0
    for lineno, line in lines(path):
        if not line.strip():
            continue
        rows += 1
        issues.seen[name] += 1
        if not valid_utf8(line):
            issues.add(name, lineno, "not valid UTF-8")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            issues.add(name, lineno, f"not valid JSON ({err.msg} at column {err.colno})")
            continue
        if not isinstance(row, dict):
            issues.add(name, lineno, "not a JSON object")
            continue
        yield lineno, row
    require_rows(name, rows)


def require_rows(name: str, rows: int) -> None:
    if not rows:
        raise ValueError(f"{name} is empty (it has no rows)")


def display_name(path_as_written: str) -> str:
    """How a user file is named in messages: as the user wrote it, never as an absolute path."""
    path = Path(path_as_written)
    return (path.name or path_as_written) if path.is_absolute() else path_as_written  # "/" has no name


def resolve(path_as_written: str, base_dir: Path) -> Path:
    path = Path(path_as_written)
    return path if path.is_absolute() else base_dir / path


def seeded_unit(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by seed and key: the same on every run and machine (splits and samples)."""
    digest = hashlib.sha256(f"{seed}\0{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def content_id(prefix: str, text: str) -> str:
    return prefix + hashlib.sha256(text.encode("utf-8")).hexdigest()[:20]

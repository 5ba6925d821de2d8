"""Which generated queries are kept: a bad query is worse than none.

In order, each filter seeing what the previous kept:

1. well-formed: the reply's first line, without quotes, numbering or a `Query:` label; empty,
   markup, no letters, over 32 words, or looping (a word trigram twice) is dropped;
2. unique: a query written twice for one document is kept once;
3. not a copy: a query that repeats its passage (most of its words in one run of the passage,
   which a small model does when it fails to follow the prompt) is dropped;
4. specific (`filter.generic`): a query about the passage itself ("what is the purpose of this
   passage"), a few-shot example's own query, one written for several different documents, or
   one for which the base model scores its ten best documents about equally (the best within
   0.05 of the tenth) could be asked of any document, and is dropped;
5. round trip (`filter.roundTripTopK`, training queries only): the base model must rank the
   query's own document within the top k of the corpus (Promptagator).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass

MAX_WORDS = 32
REPEATS_MIN_WORDS = 8  # a query this long whose words are mostly repeats is a model looping
COPY_RUN = 0.8  # a query this share of whose words are one run of the passage's words copies it
COPY_MIN_WORDS = 5
FLAT_K, FLAT_MARGIN = 10, 0.05  # generic: best score within this of the FLAT_K-th best

_LABEL = re.compile(r"^\s*(?:[-*•]|\d+[.)]|(?:search\s+)?query\s*\d*\s*[:：-])\s*", re.IGNORECASE)
_QUOTES = "\"'“”‘’`«»"
_WORD = re.compile(r"[^\W_]+")
_ABOUT_THE_TEXT = re.compile(
    r"\b(?:this|the|that|above|given|following)\s+(?:passage|text|article|document|paragraph|abstract|excerpt|"
    r"study|paper|extract|snippet|author|authors|writer)s?\b",
    re.IGNORECASE,
)


@dataclass
class Candidate:
    """A generated query and the document it was written for."""

    doc_id: str
    sample: int
    raw: str
    query: str = ""
    dropped: str = ""  # the filter that dropped it; empty while kept


def words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def normalised(text: str) -> str:
    return " ".join(words(text))


def clean(raw: str) -> str:
    """The query in a reply: its first non-empty line, without a label, numbering or quotes."""
    line = next((ln for ln in raw.strip().splitlines() if ln.strip()), "")
    line = _LABEL.sub("", line).strip()
    return line.strip(_QUOTES).strip()


def malformed(query: str) -> str | None:
    if not query:
        return "empty"
    if "<|" in query or "|>" in query or "</" in query:
        return "markup"
    if not words(query):
        return "no words"
    if len(words(query)) > MAX_WORDS:
        return f"more than {MAX_WORDS} words"
    if repeats(words(query)):
        return "repeats itself"
    return None


def repeats(ws: list[str]) -> bool:
    """A word trigram twice, or fewer than half the words distinct: the loop a small model falls into."""
    if len(ws) < REPEATS_MIN_WORDS:
        return False
    trigrams = list(zip(ws, ws[1:], ws[2:], strict=False))
    return len(set(trigrams)) < len(trigrams) or len(set(ws)) < len(ws) / 2


def copies(query: str, passage: str) -> bool:
    """Whether most of the query's words are one run of the passage's: a copy, not a question."""
    q, p = words(query), words(passage)
    if len(q) < COPY_MIN_WORDS:
        return normalised(query) == normalised(passage)
    return _longest_run(q, p) >= COPY_RUN * len(q)


def _longest_run(q: list[str], p: list[str]) -> int:
    best, previous = 0, [0] * (len(p) + 1)
    for a in q:
        current = [0] * (len(p) + 1)
        for j, b in enumerate(p, 1):
            if a == b:
                current[j] = previous[j - 1] + 1
                best = max(best, current[j])
        previous = current
    return best


def about_the_text(query: str) -> bool:
    return bool(_ABOUT_THE_TEXT.search(query))


def well_formed(candidates: list[Candidate]) -> None:
    for c in candidates:
        c.query = clean(c.raw)
        if reason := malformed(c.query):
            c.dropped = f"malformed ({reason})"


def unique(candidates: list[Candidate]) -> None:
    seen: set[tuple[str, str]] = set()
    for c in kept(candidates):
        key = (c.doc_id, normalised(c.query))
        if key in seen:
            c.dropped = "duplicate"
        seen.add(key)


def not_copies(candidates: list[Candidate], passages: dict[str, str]) -> None:
    for c in kept(candidates):
        if copies(c.query, passages[c.doc_id]):
            c.dropped = "copies the passage"


def specific_by_text(candidates: list[Candidate], example_queries: list[str]) -> None:
    """Generic by their words: about the passage itself, a few-shot example's query, or written for several
    documents."""
    documents: dict[str, set[str]] = defaultdict(set)
    for c in kept(candidates):
        documents[normalised(c.query)].add(c.doc_id)
    examples = {normalised(q) for q in example_queries}
    for c in kept(candidates):
        if about_the_text(c.query):
            c.dropped = "generic (about the passage itself)"
        elif normalised(c.query) in examples:
            c.dropped = "generic (a few-shot example's query)"
        elif len(documents[normalised(c.query)]) > 1:
            c.dropped = f"generic (written for {len(documents[normalised(c.query)])} documents)"


def kept(candidates: list[Candidate]) -> list[Candidate]:
    return [c for c in candidates if not c.dropped]

"""The text filters of generated queries: each catches what a small generator really writes."""

from __future__ import annotations

from embedops.workers.generate import filters
from embedops.workers.generate.filters import Candidate

PASSAGE = (
    "Environmental determinants of physical activity and inactivity were studied in 2,000 adults, "
    "showing that access to parks increased walking."
)


def test_clean_takes_the_first_line_without_labels_numbers_or_quotes():
    assert filters.clean('Query: "what raises walking in adults"\nsecond line') == "what raises walking in adults"
    assert filters.clean("1. does park access change activity") == "does park access change activity"
    assert filters.clean("\n\n  - 'vitamin d and bones'  ") == "vitamin d and bones"


def test_malformed_replies():
    assert filters.malformed("") == "empty"
    assert filters.malformed("<|im_start|>assistant") == "markup"
    assert filters.malformed("?!") == "no words"
    assert filters.malformed(" ".join(["word"] * 40)).startswith("more than")
    assert filters.malformed("genetics of the family. genetics of the family. cancer genetics") == "repeats itself"
    assert filters.malformed("what is the relationship between muscles and muscles and muscles and how") == (
        "repeats itself"
    )
    assert filters.malformed("does access to parks increase walking in adults") is None


def test_a_query_that_is_a_run_of_its_passage_copies_it():
    assert filters.copies("environmental determinants of physical activity and inactivity", PASSAGE)
    assert not filters.copies("do parks make adults walk more", PASSAGE)
    assert filters.copies(PASSAGE, PASSAGE)


def test_the_filters_in_order_mark_why_each_query_went():
    replies = {
        ("d1", 0): "does park access make adults walk more",
        ("d1", 1): "Does park access make adults walk more?",  # the same query again
        ("d1", 2): "environmental determinants of physical activity and inactivity",  # a copy
        ("d2", 0): "What is the purpose of this passage?",
        ("d3", 0): "when was the eiffel tower built",  # a few-shot example's query
        ("d4", 0): "which genes raise cancer risk",
        ("d5", 0): "which genes raise cancer risk",  # written for two documents
        ("d6", 0): "",
    }
    candidates = [Candidate(doc_id=d, sample=s, raw=r) for (d, s), r in replies.items()]
    passages = dict.fromkeys(("d1", "d2", "d3", "d4", "d5", "d6"), "Something else entirely.") | {"d1": PASSAGE}
    filters.well_formed(candidates)
    filters.unique(candidates)
    filters.not_copies(candidates, passages)
    filters.specific_by_text(candidates, ["when was the eiffel tower built"])
    why = {(c.doc_id, c.sample): c.dropped for c in candidates}
    assert why == {
        ("d1", 0): "",
        ("d1", 1): "duplicate",
        ("d1", 2): "copies the passage",
        ("d2", 0): "generic (about the passage itself)",
        ("d3", 0): "generic (a few-shot example's query)",
        ("d4", 0): "generic (written for 2 documents)",
        ("d5", 0): "generic (written for 2 documents)",
        ("d6", 0): "malformed (empty)",
    }

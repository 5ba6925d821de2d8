"""The chat prompt a generator is given for one document, and the hash that keys the cache by it.

Few-shot examples are earlier user/assistant turns, which small chat models follow far better
than an instruction alone (SmolLM2-135M copies the passage when only told to write a query).
"""

from __future__ import annotations

import hashlib
import json

from embedops.api.generate import PromptExample, PromptSpec
from embedops.prepared import Doc

Messages = tuple[dict[str, str], ...]

# Used when neither the spec nor the source gives an example: general, so no domain is favoured.
BUILT_IN_EXAMPLES = (
    PromptExample(
        text=(
            "Vitamin D is a fat-soluble vitamin that helps the body absorb calcium and phosphate. Deficiency "
            "causes rickets in children and osteomalacia in adults."
        ),
        query="what does vitamin d do in the body",
    ),
    PromptExample(
        text=(
            "The Eiffel Tower was built by Gustave Eiffel's company for the 1889 World's Fair in Paris. At 330 "
            "metres it was the tallest man-made structure in the world until 1930."
        ),
        query="when was the eiffel tower built",
    ),
)
# The longest passage put in a prompt, in characters: the query is about its beginning anyway, and a
# long document would otherwise cost its full length in prompt tokens.
MAX_PASSAGE_CHARS = 2_000


def user_turn(spec: PromptSpec, text: str, title: str = "") -> str:
    return spec.template.format(text=text[:MAX_PASSAGE_CHARS], title=title)


def messages(spec: PromptSpec, examples: tuple[PromptExample, ...], doc: Doc) -> Messages:
    turns: list[dict[str, str]] = [{"role": "system", "content": spec.system}] if spec.system else []
    for example in examples:
        turns += [
            {"role": "user", "content": user_turn(spec, example.text)},
            {"role": "assistant", "content": example.query},
        ]
    turns.append({"role": "user", "content": user_turn(spec, doc.text, doc.title)})
    return tuple(turns)


def prompt_hash(spec: PromptSpec, examples: tuple[PromptExample, ...]) -> str:
    """What a change of prompt changes: system, template and examples."""
    wire = {"system": spec.system, "template": spec.template, "examples": [e.to_wire() for e in examples]}
    return hashlib.sha256(json.dumps(wire, sort_keys=True).encode()).hexdigest()[:16]


def document_hash(doc: Doc) -> str:
    return hashlib.sha256(f"{doc.title}\0{doc.text}".encode()).hexdigest()[:24]

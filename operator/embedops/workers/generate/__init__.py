"""Query generation for `EmbeddingDataset.spec.generate`: prompts, generators, the cache and the filters.

One module per part: `prompt` (the chat messages and their hash), `endpoint` (an OpenAI-compatible
server), `local` (a causal LM in this process), `cache` (what was generated, on the workspace),
`filters` (which queries are kept) and `run` (the order they are used in by the prepare step).
"""

"""The train worker's parts, one idea a module, as sentence-transformers lays out its own.

`embedops.workers.train.run` reads like a sentence-transformers training script; the pieces it
calls live here: the training dataset (data), the held-out queries that score it (validation),
the collator on texts tokenized up front (collator), the loss (loss), the trainer's arguments,
callbacks and class (trainer), the checkpoints a killed run resumes from and the one that is
published (checkpoints), and the checks that stop a run whose loss or weights are no longer finite
(divergence).
"""

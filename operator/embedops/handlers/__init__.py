"""The kopf entry points. Importing this package registers the handlers (`embedops operator` does)."""

from embedops.handlers import triggers  # noqa: F401

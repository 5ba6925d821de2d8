#!/usr/bin/env bash
# Fresh machine to a fine-tuned, re-indexed, probed SciFact sample: install, then run the
# quickstart's three resources end to end on this machine (embedded Postgres, bundled model);
# then an index over a table that changes: built, rows changed, synced, searched (hack/sync_demo.py).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh
.venv/bin/embedops run -f examples/quickstart "$@"
exec .venv/bin/python hack/sync_demo.py

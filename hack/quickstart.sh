#!/usr/bin/env bash
# Fresh machine to a fine-tuned, re-indexed, probed SciFact sample: install, then run the
# quickstart's three resources end to end on this machine (embedded Postgres, bundled model).
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh
exec .venv/bin/embedops run -f examples/quickstart "$@"

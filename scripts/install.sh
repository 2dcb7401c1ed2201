#!/usr/bin/env bash
# Create .venv and install orcache into it (idempotent: a re-run with nothing changed is quick).
#   scripts/install.sh            proxy + local MiniLM embeddings
#   scripts/install.sh test       also the test tools (pytest, openai SDK, Playwright)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="semantic"
[ "${1:-}" = "test" ] && extras="semantic,test"
py="${PYTHON:-python3}"
[ -x .venv/bin/python ] || "$py" -m venv .venv
stamp=".venv/.orcache-installed-$extras"
if [ -f "$stamp" ] && [ "$stamp" -nt pyproject.toml ]; then
  exit 0
fi
pip=(.venv/bin/python -m pip install --disable-pip-version-check -q)
# The CPU build of torch first: a plain 'torch' requirement would pull a multi-GB CUDA build.
links=()
[ -d /opt/wheels ] && links=(--find-links /opt/wheels)
.venv/bin/python -c "import torch" 2>/dev/null || "${pip[@]}" "${links[@]}" "torch==2.13.0"
"${pip[@]}" -e ".[$extras]"
touch "$stamp"

#!/usr/bin/env bash
# Install (first run only) and start the proxy: embedded Redis + Postgres under .orcache/ unless
# REDIS_URL / DATABASE_URL are set. Flags go to `orcache serve` (e.g. --port 8080 --workers 2).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh
exec .venv/bin/orcache serve "$@"

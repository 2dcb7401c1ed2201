#!/usr/bin/env bash
# Install everything the test suite needs on a fresh Debian machine and run it.
# Debian packages: chromium (browser tests), redis-tools (redis-cli), wrk (benchmarks), openssl (a test
# certificate for the TLS upstream tests), a CJK font.
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
command -v chromium >/dev/null || need+=(chromium)
command -v redis-cli >/dev/null || need+=(redis-tools)
command -v wrk >/dev/null || need+=(wrk)
command -v openssl >/dev/null || need+=(openssl)
# a CJK font, so the Chinese labels render in screenshots
[ -e /usr/share/fonts/truetype/wqy/wqy-microhei.ttc ] || need+=(fonts-wqy-microhei)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then sudo=(); else sudo=(sudo); fi
  "${sudo[@]}" apt-get update -q
  DEBIAN_FRONTEND=noninteractive "${sudo[@]}" apt-get install -y -q --no-install-recommends "${need[@]}"
fi
bash scripts/install.sh test
export HF_HUB_OFFLINE=1
exec .venv/bin/python -m pytest -p no:cacheprovider "$@"

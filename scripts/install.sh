#!/usr/bin/env bash
# Create .venv and install qrank editable with the given extras (default: test), for scripts/demo.sh and
# scripts/test.sh. The packages are installed by uv (fetched by pip first): it resolves and downloads in
# parallel, ~20 s here against ~10 minutes for pip on a fresh 2-core machine, with the same versions.
# uv reads no pip configuration, so a local wheel folder pip would use (/opt/wheels on this project's machines:
# the CPU build of the pinned torch) is named explicitly; set QRANK_FIND_LINKS to use another one.
set -euo pipefail
cd "$(dirname "$0")/.."
extras=${1:-test}
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip uv==0.13.9
links=${QRANK_FIND_LINKS:-/opt/wheels}
args=()
[ -d "$links" ] && args+=(--find-links "$links")
.venv/bin/uv pip install -q --python .venv/bin/python "${args[@]}" -e ".[$extras]"

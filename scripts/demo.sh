#!/usr/bin/env bash
# Set up a fresh machine and run the main job on the embedded default (local models from ../shared).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e '.[all]'
SHARED=${QRANK_SHARED_DIR:-../shared}
export HF_HUB_OFFLINE=1
.venv/bin/qrank rerank --model "$SHARED/models/scifact-minilm-ce" \
  --query "Vitamin D deficiency is associated with a higher risk of respiratory infections." \
  --documents examples/documents.txt --top-n 5

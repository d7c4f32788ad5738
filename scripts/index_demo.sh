#!/usr/bin/env bash
# Two-stage search on the embedded default, end to end: index SciFact (5,183 abstracts, title + " " + text)
# with the shared MiniLM embedder, then search it, reranking the top 100 with the shared cross-encoder.
# Indexing embeds ~10k passages (abstracts longer than MiniLM's 256 tokens are split): several minutes on
# 2 CPU cores, once — a re-run embeds nothing, and Ctrl-C keeps finished batches.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${QRANK_SHARED_DIR:-../shared}
QRANK=${QRANK:-.venv/bin/qrank}
export HF_HUB_OFFLINE=1

"$QRANK" index add --collection scifact \
  --embedder "$SHARED/models/all-MiniLM-L6-v2" \
  --reranker "$SHARED/models/scifact-minilm-ce" \
  "$SHARED/datasets/scifact/corpus.jsonl"

"$QRANK" search --collection scifact --k 10 --candidates 100 \
  "Vitamin D deficiency is associated with a higher risk of respiratory infections."

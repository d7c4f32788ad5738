#!/usr/bin/env bash
# Two-stage search on the embedded default, end to end: index SciFact (5,183 abstracts, title + " " + text)
# with the shared MiniLM embedder, then search it with a judged SciFact test claim, reranking the dense top
# 100 with the shared cross-encoder; hits the SciFact judgements call relevant are marked ✓.
# Indexing embeds ~10k passages (abstracts longer than MiniLM's 256 tokens are split): several minutes on
# 2 CPU cores, once — a re-run embeds nothing, and Ctrl-C keeps finished batches. On a terminal it shows a
# progress bar; piped to a file or a CI log it writes a progress line (count, rate, ETA) every 30 s.
set -euo pipefail
cd "$(dirname "$0")/.."
SHARED=${QRANK_SHARED_DIR:-../shared}
QRANK=${QRANK:-.venv/bin/qrank}
PYTHON=${PYTHON:-.venv/bin/python}
export HF_HUB_OFFLINE=1

echo "demo: indexing the 5,183 SciFact abstracts (embeds ~10k passages once; a re-run embeds nothing)…" >&2
"$QRANK" index add --collection scifact \
  --embedder "$SHARED/models/all-MiniLM-L6-v2" \
  --reranker "$SHARED/models/scifact-minilm-ce" \
  "$SHARED/datasets/scifact/corpus.jsonl"

# claim 1370 of the SciFact test split, "Vitamin D deficiency is unrelated to birth weight." (judged: one
# relevant abstract); the same search by hand: qrank search --collection scifact "<claim>"
"$PYTHON" examples/scifact_search.py --collection scifact --dataset "$SHARED/datasets/scifact" --claim 1370

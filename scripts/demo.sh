#!/usr/bin/env bash
# Set up a fresh machine and run the main job on the embedded default: index the SciFact abstracts in a
# local collection (FAISS + SQLite under QRANK_HOME) with the shared MiniLM embedder, then search it with a
# judged SciFact claim, reranking the dense top 100 with the shared cross-encoder. Models come from
# ../shared; nothing is downloaded. The first run embeds the corpus (several minutes on 2 cores; progress
# on stderr: a bar on a terminal, a line every 30 s in a log); a re-run embeds nothing.
set -euo pipefail
cd "$(dirname "$0")/.."
echo "demo: creating .venv and installing qrank with its extras (under a minute here)…" >&2
bash scripts/install.sh all
exec bash scripts/index_demo.sh

#!/usr/bin/env bash
# Set up a fresh machine, lint, and run the test suite with the doctests (what CI runs). Extra args go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install.sh test
.venv/bin/ruff check src tests bench scripts conftest.py
exec .venv/bin/python -m pytest "$@"

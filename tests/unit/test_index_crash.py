"""Crash safety: a writer killed with SIGKILL mid-ingest loses nothing it acknowledged, duplicates
nothing, and the collection (SQLite + FAISS) opens and searches afterwards."""

from __future__ import annotations

import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from index_fakes import BowModel, bow_vectors

from qrank import Embedder, Settings
from qrank.index.faiss_index import faiss_ids
from qrank.pipeline import Pipeline

pytest.importorskip("faiss")

TESTS = Path(__file__).resolve().parent.parent

# The writer: rounds of adds (new documents, plus replacements of a few shared ids), small token
# budgets so that every add commits several batches. It prints "ACK ids..." after each committed
# batch (the store's add returned: the batch is acknowledged) and "ADDED r" after each whole add.
CHILD = r"""
import sys
sys.path.insert(0, sys.argv[3])
from index_fakes import BowModel
from qrank import Embedder, Settings
from qrank.pipeline import Pipeline

home, start = sys.argv[1], int(sys.argv[2])
settings = Settings(home=home, engine={"max_batch_tokens": 64}, cache={"enabled": False})
p = Pipeline.open("crash", embedder=Embedder(BowModel(delay=0.003)), settings=settings)
store = p.collection.store
add = store.add
def acking_add(passages, vectors):
    add(passages, vectors)
    print("ACK " + " ".join(sorted({x.doc_id for x in passages})), flush=True)
store.add = acking_add
for r in range(start, start + 1000):
    docs = [{"id": f"d{r}-{j}", "text": f"round {r} document {j} about topic{j % 5} " + "word " * (j % 7)}
            for j in range(12)]
    docs += [{"id": f"shared{j}", "text": f"shared {j} version {r} " + "more " * (r % 4)} for j in range(3)]
    p.add(docs, progress=False)
    print(f"ADDED {r}", flush=True)
"""


def run_and_kill(home: Path, start: int, acks_before_kill: int, rng: random.Random) -> set[str]:
    env = {**os.environ, "PYTHONPATH": str(TESTS.parent / "src")}
    proc = subprocess.Popen([sys.executable, "-c", CHILD, str(home), str(start), str(TESTS)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)
    acked: set[str] = set()
    seen = 0
    deadline = time.monotonic() + 240
    try:
        while seen < acks_before_kill:
            line = proc.stdout.readline()
            if not line:
                pytest.fail(f"writer exited early: {proc.stderr.read()[-2000:]}")
            if line.startswith("ACK "):
                acked.update(line.split()[1:])
                seen += 1
            assert time.monotonic() < deadline, "writer too slow"
        time.sleep(rng.uniform(0, 0.08))  # land somewhere in a batch, a commit or a FAISS file write
        os.kill(proc.pid, signal.SIGKILL)
        rest, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL
    for line in rest.splitlines():  # printed before the kill: acknowledged too
        if line.startswith("ACK "):
            acked.update(line.split()[1:])
    return acked


def test_sigkill_mid_ingest_loses_and_duplicates_nothing(tmp_path):
    rng = random.Random(int(os.environ.get("QRANK_CRASH_SEED", "7")))
    acked: set[str] = set()
    for cycle in range(3):
        acked |= run_and_kill(tmp_path, cycle * 1000, rng.randint(4, 14), rng)

    settings = Settings(home=tmp_path, cache={"enabled": False})
    db = sqlite3.connect(tmp_path / "collections" / "crash" / "store.sqlite")
    assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    # one version per document: chunks 0..n-1, one hash, no (doc, chunk) twice
    rows = db.execute("SELECT doc_id, COUNT(*), MIN(chunk), MAX(chunk), COUNT(DISTINCT hash), COUNT(DISTINCT chunk) "
                      "FROM passages GROUP BY doc_id").fetchall()
    for doc_id, n, lo, hi, hashes, distinct in rows:
        assert (lo, hi, hashes, distinct) == (0, n - 1, 1, n), doc_id
    stored = {r[0] for r in rows}
    assert acked <= stored, f"acknowledged but missing: {sorted(acked - stored)[:5]}"

    p = Pipeline.open("crash", embedder=Embedder(BowModel()), settings=settings)
    store = p.collection.store
    n_passages = store.count_passages()
    hits = store.search(bow_vectors(["probe"])[0], n_passages)
    assert len(hits) == n_passages  # every passage exactly once in the loaded index
    assert len({(h.doc_id, h.passage.chunk) for h in hits}) == n_passages
    pids = {r[0] for r in db.execute("SELECT pid FROM passages")}
    assert set(faiss_ids(store._index).tolist()) - store._dead == pids
    # and acknowledged documents are found by their own text
    sample = sorted(d for d in acked if d.startswith("d"))[:: max(1, len(acked) // 15)]
    for doc_id in sample:
        text = store.get([doc_id])[doc_id][0].text
        assert doc_id in [h.id for h in p.search(text, k=3, rerank=False)]
    # still writable after the crashes
    assert p.add([{"id": "after", "text": "written after the crashes"}], progress=False)["added"] == 1
    assert np.isclose(p.search("written after the crashes", k=1, rerank=False)[0].dense_score, 1.0, atol=1e-5)

"""nDCG@10 of long-document policies (truncate vs chunk+{max, mean_top_k, first}) on the SciFact long set
(``python -m qrank.eval.longdocs``), reranking the dense top-DEPTH with the shared cross-encoder on the CPU.

Chunk scores are computed once per (claim, composite) and folded with each aggregate; results are written after
every claim so a partial run still reports.

    DEPTH=5 OMP_NUM_THREADS=1 python bench/longdocs_policy.py /tmp/long-scifact bench/logs/longdocs_policy.json
"""
import json
import os
import sys
import time
from dataclasses import replace

import numpy as np

from qrank import Embedder, Reranker
from qrank.eval.data import load_dataset
from qrank.eval.metrics import evaluate_run
from qrank.long_documents import LongDocuments, plan

data, out = sys.argv[1], sys.argv[2]
depth = int(os.environ.get("DEPTH", "5"))
ds = load_dataset(data)
qids = sorted(ds.queries)
em = Embedder.from_pretrained(os.environ.get("EMBEDDER", "../shared/models/all-MiniLM-L6-v2"), device="cpu")
dv = em.embed(ds.doc_texts)
qv = em.embed([ds.queries[q] for q in qids], is_query=True)
rr = Reranker.from_pretrained(os.environ.get("RERANKER", "../shared/models/scifact-minilm-ce"), device="cpu")
aggs = {"chunk+max": ("max", 3), "chunk+mean_top_k(2)": ("mean_top_k", 2), "chunk+mean_top_k(3)": ("mean_top_k", 3),
        "chunk+first": ("first", 3)}
runs = {"dense": {}, "truncate": {}, **{k: {} for k in aggs}}
pairs_scored = {"truncate": 0, "chunk": 0}
seconds = {"truncate": 0.0, "chunk": 0.0}
for n, (qid, v) in enumerate(zip(qids, qv), 1):
    sims = dv @ v
    order = np.argsort(-sims, kind="stable")[:10]
    ids = [ds.doc_ids[i] for i in order]
    runs["dense"][qid] = {d: float(sims[i]) for d, i in zip(ids, order)}
    top = order[:depth]
    q = ds.queries[qid]
    pairs = [(q, ds.doc_texts[i]) for i in top]
    t = time.perf_counter()
    trunc = rr.model.score_pairs(pairs)
    seconds["truncate"] += time.perf_counter() - t
    pairs_scored["truncate"] += len(pairs)
    laid = plan(rr.model, pairs, instruction=None, policy=LongDocuments(policy="chunk"))
    t = time.perf_counter()
    chunk_scores = rr.model.score_pairs(laid.pairs)
    seconds["chunk"] += time.perf_counter() - t
    pairs_scored["chunk"] += len(laid.pairs)

    def ranked(scores):
        # reranked top-depth first (scores shifted above the dense rest), then the dense order
        out = {ds.doc_ids[i]: 10.0 + float(s) for i, s in zip(top, scores)}
        for r, i in enumerate(order[depth:]):
            out[ds.doc_ids[i]] = 1.0 - r / 100
        return out

    runs["truncate"][qid] = ranked(trunc)
    for name, (how, k) in aggs.items():
        folded, _ = replace(laid, policy=replace(laid.policy, aggregate=how, top_k=k)).fold(chunk_scores)
        runs[name][qid] = ranked(folded)
    qrels = {x: ds.qrels[x] for x in runs["dense"]}
    table = {name: evaluate_run(qrels, run, ["ndcg@10", "mrr@10"]) for name, run in runs.items()}
    with open(out, "w") as f:
        json.dump({"claims": n, "depth": depth, "pairs": pairs_scored, "seconds": seconds, "table": table}, f, indent=1)
    print(n, json.dumps({k: round(v["mean"]["ndcg@10"], 4) for k, v in table.items()}), pairs_scored, flush=True)

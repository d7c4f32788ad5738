"""A long-document benchmark made from a BEIR set (SciFact): composites of 2k–8k tokens, qrels on composites.

Each sampled claim gets one *relevant composite* per relevant abstract (the abstract at a random position among
hard distractors) and ``distractors`` *distractor composites*; hard distractors are the claim's dense top-100
abstracts (the embedder through qrank's persistent cache), shuffled; if they run out, the next dense ranks follow.
A composite is abstracts (``title + " " + text``) joined by a blank line, its length drawn uniformly in
``[min_tokens, max_tokens]`` and counted with ``tokenizer`` (the shared cross-encoder's, without special
tokens). Relevant abstracts of sampled claims never serve as distractors, so each appears exactly once; a
composite is relevant to a claim iff it contains one of the claim's relevant abstracts. Same inputs and
seed give byte-identical files::

    python -m qrank.eval.longdocs --dataset ../shared/datasets/scifact --out long-scifact \\
        [--claims 40] [--seed 0] [--min-tokens 2000 --max-tokens 8000] [--distractors 4]

writes ``corpus.jsonl``, ``queries.jsonl``, ``qrels/test.tsv`` (read by :func:`qrank.eval.data.load_dataset`),
``composites.jsonl`` (per composite its parts with character spans, and where each relevant abstract sits:
part index, characters, first token) and ``manifest.json`` (parameters, source SHA-256s, counts, token figures).

Why 40 claims by default: an evaluation with chunking reranks each claim's top 10 composites; a composite of
5,000 tokens on average is ~12 windows of 512 tokens (~480 document tokens beside the claim, some overlap), so
40 claims × 10 × 12 ≈ 4,800 cross-encoder pairs of 512 tokens. The 6-layer MiniLM cross-encoder takes
≈0.1–0.15 s a 512-token pair on 2 CPU cores (≈13 GFLOP; docs/eval.md: 6 s for 100 pairs of ~350 tokens), so
≈8–12 minutes; truncating scores 40 × 10 = 400 pairs. With ~1.1 relevant abstracts per claim and 4
distractor composites per claim that is ~205 composites of 5,000 tokens on average (~1M tokens).

>>> text, spans = assemble(["Title one. Text one.", "Title two. Text two."])
>>> text[spans[1][0]:spans[1][1]]
'Title two. Text two.'
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import random
import statistics
from pathlib import Path

import numpy as np

from ..errors import InvalidInput
from .data import load_dataset
from .stages import ENCODE_WINDOW

log = logging.getLogger(__name__)

SEP = "\n\n"
HARD_DEPTH = 100
HEAD_TOKENS = 512  # the cross-encoder's window: a relevant abstract starting here or later is lost by truncation
DEFAULT_CLAIMS, DEFAULT_DISTRACTORS = 40, 4
ROUND = 5  # dense scores are rounded before ranking, so float noise in the last bits never reorders them


def pick_claims(qids: list[str], n: int | None, seed: int) -> list[str]:
    """A seeded sample of ``n`` claims, kept in their original order (all of them when ``n`` is None).

    >>> pick_claims(["a", "b", "c", "d"], 2, 0)
    ['b', 'd']
    >>> pick_claims(["a", "b"], None, 0)
    ['a', 'b']
    """
    if n is None or n >= len(qids):
        return list(qids)
    chosen = set(random.Random(seed).sample(qids, n))
    return [q for q in qids if q in chosen]


def fill(target: int, fixed: int, pool: list[int], tokens: list[int], max_tokens: int) -> list[int]:
    """Take abstracts from the front of ``pool`` (removed from it) until ``fixed`` + theirs reaches ``target``.

    An abstract that would push the total past ``max_tokens`` is passed over for a later, shorter one.

    >>> pool = [0, 1, 2, 3]
    >>> fill(10, 2, pool, [5, 9, 4, 1], 12), pool
    ([0, 2], [1, 3])
    """
    taken, total = [], fixed
    i = 0
    while total < target and i < len(pool):
        if total + tokens[pool[i]] <= max_tokens:
            total += tokens[pool[i]]
            taken.append(pool.pop(i))
        else:
            i += 1
    return taken


def place(parts: list, position: int, item) -> tuple[list, int]:
    """``parts`` with ``item`` inserted at ``position`` (clipped to the list), and where it went.

    >>> place(["a", "b"], 1, "R")
    (['a', 'R', 'b'], 1)
    """
    position = max(0, min(position, len(parts)))
    return [*parts[:position], item, *parts[position:]], position


def assemble(texts: list[str]) -> tuple[str, list[tuple[int, int]]]:
    """Join texts with a blank line; each text's ``(start, end)`` character span in the result.

    >>> text, spans = assemble(["First.", "Second."])
    >>> text, spans, text[spans[1][0]:spans[1][1]]
    ('First.\\n\\nSecond.', [(0, 6), (8, 15)], 'Second.')
    """
    spans, at = [], 0
    for t in texts:
        spans.append((at, at + len(t)))
        at += len(t) + len(SEP)
    return SEP.join(texts), spans


def token_counts(tokenizer, texts: list[str]) -> list[int]:
    """Tokens of each text, without special tokens (a model adds its own around the document)."""
    return [len(ids) for ids in tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]]


def dense_orders(embedder, doc_texts: list[str], claims: list[str]) -> list[np.ndarray]:
    """Each claim's corpus indices, best first by inner product (ties: corpus order)."""
    # windows of ENCODE_WINDOW texts, as `qrank eval` encodes a corpus: an interrupted encoding resumes from the cache
    docs = np.concatenate([np.asarray(embedder.embed(doc_texts[i : i + ENCODE_WINDOW]), dtype=np.float32)
                           for i in range(0, len(doc_texts), ENCODE_WINDOW)])
    queries = np.asarray(embedder.embed(claims, is_query=True), dtype=np.float32)
    index = np.arange(len(doc_texts))
    return [np.lexsort((index, -np.round(docs @ q, ROUND))) for q in queries]


def make_long(dataset: str | Path, out: str | Path, *, embedder, tokenizer, claims: int | None = DEFAULT_CLAIMS,
              seed: int = 0, min_tokens: int = 2000, max_tokens: int = 8000,
              distractors: int = DEFAULT_DISTRACTORS) -> dict:
    """Write the benchmark for ``dataset`` (a BEIR folder) into ``out``; returns the manifest (see module doc)."""
    for name, value in (("claims", claims), ("min_tokens", min_tokens), ("max_tokens", max_tokens)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InvalidInput(name, f"must be a positive integer, got {value!r}")
    if isinstance(distractors, bool) or not isinstance(distractors, int) or distractors < 0:
        raise InvalidInput("distractors", f"must be a non-negative integer, got {distractors!r}")
    if min_tokens > max_tokens:
        raise InvalidInput("min_tokens", f"must not exceed max_tokens ({max_tokens}), got {min_tokens}")
    ds = load_dataset(dataset)
    row = {d: i for i, d in enumerate(ds.doc_ids)}
    rels = {q: [d for d, g in r.items() if g > 0 and d in row] for q, r in ds.qrels.items()}
    qids = pick_claims([q for q in ds.queries if rels[q]], claims, seed)
    tokens = token_counts(tokenizer, ds.doc_texts)
    sep = len(tokenizer(SEP, add_special_tokens=False)["input_ids"])
    reserved = {row[d] for q in qids for d in rels[q]}
    too_long = [ds.doc_ids[i] for i in sorted(reserved) if tokens[i] > max_tokens]
    if too_long:
        raise InvalidInput("max_tokens", f"relevant abstract {too_long[0]!r} alone has more than {max_tokens} tokens")
    orders = dense_orders(embedder, ds.doc_texts, [ds.queries[q] for q in qids])
    rng = random.Random(seed)
    cost = [t + sep for t in tokens]  # an abstract costs its tokens and one separator
    composites, beyond, placed = [], 0, set()
    for qid, order in zip(qids, orders, strict=True):
        ranked = [int(i) for i in order if int(i) not in reserved]
        hard, rest = ranked[:HARD_DEPTH], ranked[HARD_DEPTH:]
        rng.shuffle(hard)
        pool = hard + rest
        plan = [(row[d], "relevant") for d in rels[qid] if row[d] not in placed] + [(None, "distractor")] * distractors
        for rel, kind in plan:
            target = rng.randint(min_tokens, max_tokens)
            fixed = cost[rel] if rel is not None else 0
            parts = fill(target + sep, fixed, pool, cost, max_tokens + sep)
            beyond += sum(1 for i in parts if i not in hard)
            position = None
            if rel is not None:
                placed.add(rel)
                parts, position = place(parts, rng.randint(0, len(parts)), rel)
            composites.append({"claim": qid, "kind": kind, "target_tokens": target, "parts": parts, "pos": position})
    rng.shuffle(composites)  # file order and ids say nothing about relevance
    return _write(Path(out), ds, qids, rels, composites, tokenizer, embedder, beyond=beyond, params={
        "claims": claims, "seed": seed, "min_tokens": min_tokens, "max_tokens": max_tokens,
        "distractors": distractors, "hard_depth": HARD_DEPTH, "separator": SEP})


def _write(out: Path, ds, qids, rels, composites, tokenizer, embedder, *, beyond: int, params: dict) -> dict:
    width = len(str(len(composites)))
    corpus, meta, qrels = [], [], {q: [] for q in qids}
    owner = {ds.doc_ids[i]: None for c in composites for i in c["parts"]}
    for n, c in enumerate(composites):
        cid = f"L{n:0{width}d}"
        text, spans = assemble([ds.doc_texts[i] for i in c["parts"]])
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True, verbose=False)
        starts = [s for s, _ in enc["offset_mapping"]]
        n_tokens = len(starts)
        if not params["min_tokens"] <= n_tokens <= params["max_tokens"]:
            raise RuntimeError(f"composite {cid} has {n_tokens} tokens, outside the bounds: the pool ran dry?")
        parts = []
        for i, (s, e) in zip(c["parts"], spans, strict=True):
            doc = ds.doc_ids[i]
            owner[doc] = cid
            parts.append({"doc": doc, "start": s, "end": e, "token_start": int(np.searchsorted(starts, s))})
        entry = {"_id": cid, "claim": c["claim"], "kind": c["kind"], "tokens": n_tokens,
                 "target_tokens": c["target_tokens"], "relevant_position": c["pos"], "parts": parts}
        meta.append(entry)
        corpus.append({"_id": cid, "title": "", "text": text})
    for q in qids:
        qrels[q] = sorted({owner[d] for d in rels[q]})
    out.mkdir(parents=True, exist_ok=True)
    (out / "qrels").mkdir(exist_ok=True)
    _jsonl(out / "corpus.jsonl", corpus)
    _jsonl(out / "queries.jsonl", [{"_id": q, "text": ds.queries[q]} for q in qids])
    _jsonl(out / "composites.jsonl", meta)
    lines = ["query-id\tcorpus-id\tscore"] + [f"{q}\t{cid}\t1" for q in qids for cid in qrels[q]]
    (out / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest = {"parameters": params, "sources": _checksums(Path(ds.source)),
                "tokenizer": _model_card(tokenizer.name_or_path), "embedder": _model_card(embedder.info.id),
                "counts": {"claims": len(qids), "composites": len(corpus),
                           "relevant_composites": sum(m["kind"] == "relevant" for m in meta),
                           "judgements": sum(len(v) for v in qrels.values()),
                           "distractors_beyond_hard_depth": beyond},
                "figures": figures(meta)}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    log.info("wrote %d composites for %d claims to %s", len(corpus), len(qids), out)
    return manifest


def figures(meta: list[dict]) -> dict:
    """Token lengths of the composites and where the relevant abstracts start (in tokens).

    >>> m = [{"tokens": 10, "relevant_position": 1, "parts": [{"token_start": 0}, {"token_start": 600}]},
    ...      {"tokens": 30, "relevant_position": None, "parts": [{"token_start": 0}]}]
    >>> figures(m)["relevant_start_tokens"]
    {'min': 600, 'median': 600, 'max': 600, 'in_first_512': 0, 'later': 1, 'at_position_0': 0}
    """
    lengths = [m["tokens"] for m in meta]
    starts = [m["parts"][m["relevant_position"]]["token_start"] for m in meta if m["relevant_position"] is not None]
    firsts = [m for m in meta if m["relevant_position"] == 0]
    return {
        "composite_tokens": {"min": min(lengths), "median": statistics.median(lengths), "max": max(lengths),
                             "total": sum(lengths)},
        "relevant_start_tokens": {"min": min(starts, default=0), "median": statistics.median(starts or [0]),
                                  "max": max(starts, default=0), "in_first_512": sum(s < HEAD_TOKENS for s in starts),
                                  "later": sum(s >= HEAD_TOKENS for s in starts), "at_position_0": len(firsts)},
    }


def _jsonl(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")


def _checksums(root: Path) -> dict:
    files = ["corpus.jsonl", "queries.jsonl", "qrels/test.tsv"]
    return {f: hashlib.sha256((root / f).read_bytes()).hexdigest() for f in files if (root / f).is_file()}


def _model_card(name: str) -> dict:
    """A model's folder name and revision: the same on any machine, unlike its absolute path."""
    from ..models.base import resolve_model

    revision = resolve_model(name).revision if Path(name).is_dir() else None
    return {"name": Path(name).name, "revision": revision}


def load_tools(embedder: str, tokenizer: str, settings=None):
    """The cached embedder (qrank's persistent cache under ``settings.home``) and the tokenizer that counts."""
    from transformers import AutoTokenizer

    from ..cache import Cache, CachedEmbedder
    from ..embedder import Embedder
    from ..settings import Settings

    settings = settings or Settings()
    # cache keys carry the model name: an absolute path shares entries with every run that spelled it so
    name = str(Path(embedder).resolve()) if Path(embedder).is_dir() else embedder
    model = Embedder.from_pretrained(name, settings=settings)
    return CachedEmbedder(model, Cache.from_settings(settings)), AutoTokenizer.from_pretrained(tokenizer)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m qrank.eval.longdocs", description=__doc__.split("\n")[0])
    p.add_argument("--dataset", required=True, type=Path, help="a BEIR folder (../shared/datasets/scifact)")
    p.add_argument("--out", required=True, type=Path, help="folder to write the benchmark into")
    p.add_argument("--claims", type=int, default=DEFAULT_CLAIMS, help="seeded sample of judged claims; 0 = all")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--min-tokens", type=int, default=2000)
    p.add_argument("--max-tokens", type=int, default=8000)
    p.add_argument("--distractors", type=int, default=DEFAULT_DISTRACTORS, help="distractor composites per claim")
    p.add_argument("--embedder", default="../shared/models/all-MiniLM-L6-v2")
    p.add_argument("--tokenizer", default="../shared/models/scifact-minilm-ce", help="counts the tokens")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    embedder, tokenizer = load_tools(args.embedder, args.tokenizer)
    manifest = make_long(args.dataset, args.out, embedder=embedder, tokenizer=tokenizer, claims=args.claims or None,
                         seed=args.seed, min_tokens=args.min_tokens, max_tokens=args.max_tokens,
                         distractors=args.distractors)
    print(json.dumps(manifest["counts"] | manifest["figures"], indent=2))  # the CLI's answer, on stdout
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

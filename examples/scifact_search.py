"""Search the SciFact demo collection with a *judged* test claim and mark the hits SciFact calls relevant.

``scripts/index_demo.sh`` runs this after indexing. The table shows each hit's rank after reranking, a ✓
where SciFact's test judgements (``qrels/test.tsv``) call the abstract relevant, the rank it had in the
dense first stage (``was``), and both scores, so what the reranker changed is visible::

    python examples/scifact_search.py --collection scifact --claim 1370 --dataset ../shared/datasets/scifact

Claim 1370 ("Vitamin D deficiency is unrelated to birth weight.") has one relevant abstract: the dense
first stage (all-MiniLM-L6-v2) ranks it 3rd, the shared cross-encoder moves it to 1st. That cross-encoder
was trained on SciFact's *train* claims (never the test claims or judgements; see ../shared/README.md), so
SciFact flatters it: on a new corpus expect a smaller gain.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

DEMO_CLAIM = "1370"  # judged; the reranker lifts its relevant abstract from dense rank 3 to rank 1


def judged_claim(dataset: str | Path, claim_id: str) -> tuple[str, set[str]]:
    """A SciFact test claim's text and the ids of the abstracts its judgements call relevant (grade > 0)."""
    from qrank.errors import InvalidInput
    from qrank.eval.data import load_dataset

    ds = load_dataset(dataset, split="test")
    if claim_id not in ds.queries:
        raise InvalidInput("claim", f"{claim_id!r} is not a judged test claim of {dataset}")
    return ds.queries[claim_id], {d for d, grade in ds.qrels[claim_id].items() if grade > 0}


def relevance_marks(hit_ids: Sequence[str], relevant: set[str]) -> list[bool]:
    """One mark per hit: True where the judgements call that document relevant.

    >>> relevance_marks(["d3", "d1", "d9"], {"d1", "d7"})
    [False, True, False]
    """
    return [str(h) in relevant for h in hit_ids]


def search_judged(pipeline, claim: str, *, k: int = 10, candidates: int = 100) -> tuple[list[Any], dict[str, int]]:
    """The reranked top ``k`` and each candidate's rank in the dense first stage (before reranking)."""
    first = pipeline.search(claim, k=candidates, rerank=False)
    hits = pipeline.search(claim, k=k, candidates=candidates)
    return hits, {h.id: i + 1 for i, h in enumerate(first)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--collection", default="scifact")
    parser.add_argument("--dataset", default="../shared/datasets/scifact", help="SciFact in the BEIR layout")
    parser.add_argument("--claim", default=DEMO_CLAIM, help="id of a SciFact test claim (default: %(default)s)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--candidates", type=int, default=100)
    args = parser.parse_args(argv)

    from rich.console import Console

    from qrank.cli.common import configure_logging
    from qrank.cli.tables import hits_table

    configure_logging(0)  # as the qrank command does: warnings only, no model-loading bars
    from qrank.pipeline import Pipeline

    claim, relevant = judged_claim(args.dataset, args.claim)
    with Pipeline.open(args.collection, create=False) as p:
        hits, was = search_judged(p, claim, k=args.k, candidates=args.candidates)
    marks = relevance_marks([h.id for h in hits], relevant)
    console = Console()
    console.print(hits_table(hits, title=f"SciFact claim {args.claim}: {claim}", marks=marks, was=was, clip=90))
    found = [f"{d} (rank {[h.id for h in hits].index(d) + 1}, dense rank {was.get(d, '>' + str(args.candidates))})"
             for d in sorted(relevant) if d in {h.id for h in hits}]
    console.print(
        f"✓ = judged relevant by SciFact (qrels/test.tsv): {len(relevant)} abstract(s) for this claim; in the top "
        f"{args.k}: {', '.join(found) or 'none'}. 'was' = rank in the dense first stage, before reranking.",
        highlight=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

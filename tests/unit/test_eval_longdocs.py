"""The long-document benchmark generator on a tiny hand-made BEIR folder, with the real MiniLM embedder and the
shared cross-encoder's tokenizer; every check reads the written files back and recomputes with the tokenizer."""

from __future__ import annotations

import json
import random

import pytest

from qrank.errors import InvalidInput
from qrank.eval.data import doc_text, load_dataset
from qrank.eval.longdocs import load_tools, make_long
from qrank.settings import Settings

WORDS = ("cell protein gene tumour patient mouse blood heart brain virus dose trial risk signal growth "
         "receptor insulin kidney liver vaccine immune lung muscle bone").split()
MIN, MAX = 60, 120
FILES = ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv", "composites.jsonl", "manifest.json")


@pytest.fixture(scope="module")
def beir(tmp_path_factory):
    """26 abstracts of 15–40 words and two claims: c1 judges a0, c2 judges a1 and a2 (a9 is judged 0)."""
    root = tmp_path_factory.mktemp("tiny-beir")
    rng = random.Random(7)
    rows = []
    for i in range(26):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.randint(15, 40)))
        rows.append({"_id": f"a{i}", "title": f"Study number {i} on {rng.choice(WORDS)}.", "text": words + "."})
    (root / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (root / "queries.jsonl").write_text(
        '{"_id": "c1", "text": "insulin signal in liver cells"}\n'
        '{"_id": "c2", "text": "vaccine dose and immune risk"}\n'
        '{"_id": "c3", "text": "never judged"}\n'
    )
    (root / "qrels").mkdir()
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nc1\ta0\t1\nc2\ta1\t1\nc2\ta2\t1\nc2\ta9\t0\n")
    return root, {r["_id"]: doc_text(r["title"], r["text"]) for r in rows}


@pytest.fixture(scope="module")
def tools(minilm_dir, ce_dir, tmp_path_factory):
    return load_tools(str(minilm_dir), str(ce_dir), Settings(home=tmp_path_factory.mktemp("home")))


def build(beir, tools, out, seed=0):
    embedder, tokenizer = tools
    return make_long(beir[0], out, embedder=embedder, tokenizer=tokenizer, claims=None, seed=seed,
                     min_tokens=MIN, max_tokens=MAX, distractors=2)


def read_jsonl(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_composites_spans_and_qrels(beir, tools, tmp_path):
    manifest = build(beir, tools, tmp_path / "out")
    _, texts = beir
    tokenizer = tools[1]
    corpus = {r["_id"]: r["text"] for r in read_jsonl(tmp_path / "out" / "corpus.jsonl")}
    meta = {m["_id"]: m for m in read_jsonl(tmp_path / "out" / "composites.jsonl")}
    assert set(corpus) == set(meta) and len(corpus) == manifest["counts"]["composites"] == 3 + 2 * 2
    for cid, text in corpus.items():
        n = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        assert MIN <= n <= MAX and n == meta[cid]["tokens"], cid
        for part in meta[cid]["parts"]:  # every span maps back to its abstract, and its first token is right
            assert text[part["start"]:part["end"]] == texts[part["doc"]]
            assert part["token_start"] == len(tokenizer(text[:part["start"]], add_special_tokens=False)["input_ids"])
    judged = {"c1": ["a0"], "c2": ["a1", "a2"]}
    for docs in judged.values():
        for d in docs:  # each relevant abstract appears exactly once in the whole corpus
            assert sum(text.count(texts[d]) for text in corpus.values()) == 1, d
    # qrels by an independent reference: the composites whose text contains a relevant abstract
    expected = {(q, cid) for q, docs in judged.items() for cid, t in corpus.items() if any(texts[d] in t for d in docs)}
    lines = (tmp_path / "out" / "qrels" / "test.tsv").read_text().splitlines()[1:]
    assert {tuple(line.split("\t")[:2]) for line in lines} == expected and len(expected) == 3
    relevant = [m for m in meta.values() if m["kind"] == "relevant"]
    assert all(m["parts"][m["relevant_position"]]["doc"] in judged[m["claim"]] for m in relevant)
    ds = load_dataset(tmp_path / "out")
    assert sorted(ds.queries) == ["c1", "c2"] and len(ds.doc_ids) == 7
    assert ds.doc_texts[ds.doc_ids.index("L0")] == corpus["L0"]
    assert {(q, d) for q, r in ds.qrels.items() for d in r} == expected


def test_same_seed_same_bytes_other_seed_other_placement(beir, tools, tmp_path):
    build(beir, tools, tmp_path / "a")
    build(beir, tools, tmp_path / "b")
    for f in FILES:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    build(beir, tools, tmp_path / "c", seed=1)

    def placement(folder):
        return sorted((m["parts"][m["relevant_position"]]["doc"], m["parts"][m["relevant_position"]]["start"],
                       m["tokens"]) for m in read_jsonl(folder / "composites.jsonl") if m["kind"] == "relevant")

    assert placement(tmp_path / "a") != placement(tmp_path / "c")


def test_bad_bounds_name_the_field(beir, tools, tmp_path):
    with pytest.raises(InvalidInput, match="min_tokens"):
        make_long(beir[0], tmp_path, embedder=tools[0], tokenizer=tools[1], min_tokens=500, max_tokens=100)
    with pytest.raises(InvalidInput, match="max_tokens"):  # a relevant abstract alone does not fit
        make_long(beir[0], tmp_path, embedder=tools[0], tokenizer=tools[1], min_tokens=5, max_tokens=10)


def test_module_command_writes_a_dataset(beir, minilm_dir, ce_dir, tmp_path, monkeypatch, capsys):
    from qrank.eval.longdocs import main

    monkeypatch.setenv("QRANK_HOME", str(tmp_path / "home"))
    assert main(["--dataset", str(beir[0]), "--out", str(tmp_path / "out"), "--claims", "1", "--seed", "3",
                 "--min-tokens", str(MIN), "--max-tokens", str(MAX), "--distractors", "1",
                 "--embedder", str(minilm_dir), "--tokenizer", str(ce_dir)]) == 0
    printed = json.loads(capsys.readouterr().out)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert printed["claims"] == manifest["counts"]["claims"] == 1
    assert manifest["parameters"]["seed"] == 3 and set(manifest["sources"]) == {"corpus.jsonl", "queries.jsonl",
                                                                                 "qrels/test.tsv"}
    assert len(load_dataset(tmp_path / "out").queries) == 1

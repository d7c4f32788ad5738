"""Reading evaluation data sets: the BEIR layout, the simple own-judgements layout, subsets, bad input."""

from __future__ import annotations

import json

import pytest

from qrank.errors import InvalidInput
from qrank.eval.data import Dataset, load_dataset, subset
from qrank.eval.config import EvalConfig, parse_systems


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")


def beir(tmp_path, *, split="test"):
    root = tmp_path / "mini-beir"
    (root / "qrels").mkdir(parents=True)
    write_jsonl(
        root / "corpus.jsonl",
        [
            {"_id": "d1", "title": "Title one.", "text": "Body one"},
            {"_id": "d2", "title": "", "text": "Body two"},
            {"_id": "d3", "text": "Body three"},
        ],
    )
    write_jsonl(
        root / "queries.jsonl",
        [
            {"_id": "q0", "text": "unjudged query"},
            {"_id": "q2", "text": "second"},
            {"_id": "q1", "text": "first"},
        ],
    )
    (root / "qrels" / f"{split}.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t2\nq2\td2\t0\n")
    return root


def test_beir_layout(tmp_path):
    ds = load_dataset(beir(tmp_path))
    assert ds.doc_ids == ["d1", "d2", "d3"]
    # title + " " + text, the BEIR/MTEB convention; no stray space without a title
    assert ds.doc_texts == ["Title one. Body one", "Body two", "Body three"]
    assert ds.queries == {"q2": "second", "q1": "first"}  # judged queries only, in file order
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d3": 2, "d2": 0}}
    assert ds.summary()["judgements"] == 2  # grade 0 is not a relevant judgement


def test_beir_other_split_and_unknown_split(tmp_path):
    root = beir(tmp_path, split="dev")
    assert load_dataset(root, split="dev").queries
    with pytest.raises(InvalidInput) as err:
        load_dataset(root)
    assert err.value.field == "split" and "dev" in str(err.value)


def test_scifact_loads(scifact_dir):
    ds = load_dataset(scifact_dir)
    assert (len(ds.doc_ids), len(ds.queries), ds.summary()["judgements"]) == (5183, 300, 339)
    raw = json.loads((scifact_dir / "corpus.jsonl").read_text().splitlines()[0])
    assert ds.doc_texts[0] == raw["title"] + " " + raw["text"]


def test_own_jsonl_layout(tmp_path):
    root = tmp_path / "mine"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"id": "a", "text": "alpha"}, {"id": 7, "title": "T", "text": "seven"}])
    write_jsonl(
        root / "queries.jsonl",
        [
            {"query": "which is alpha?", "relevant": ["a"]},
            {"id": "graded", "query": "seven?", "relevant": {"7": 2, "a": 0}},
        ],
    )
    ds = load_dataset(root)
    assert ds.doc_ids == ["a", "7"] and ds.doc_texts == ["alpha", "T seven"]
    assert ds.queries == {"q1": "which is alpha?", "graded": "seven?"}
    assert ds.qrels == {"q1": {"a": 1}, "graded": {"7": 2, "a": 0}}


def test_files_saved_with_a_utf8_byte_order_mark_read_as_without(tmp_path):
    """Excel's "CSV UTF-8" and Windows editors start files with a BOM: the BEIR files and the own CSV layout read
    the same with it (before, the qrels' header read as a score, "score 'score' is not a number")."""
    root = beir(tmp_path)
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = root / name
        path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())
    ds = load_dataset(root)
    assert ds.doc_ids == ["d1", "d2", "d3"] and ds.qrels == {"q1": {"d1": 1}, "q2": {"d3": 2, "d2": 0}}
    own = tmp_path / "csv-bom"
    own.mkdir()
    (own / "corpus.csv").write_bytes("\ufeffid,text\na,alpha\n".encode())
    (own / "queries.csv").write_bytes("\ufeffid,query,relevant\nx,alpha?,a\n".encode())
    assert load_dataset(own).qrels == {"x": {"a": 1}}


def test_own_csv_layout(tmp_path):
    root = tmp_path / "csv"
    root.mkdir()
    (root / "corpus.csv").write_text('id,title,text\na,,alpha\nb,Bee,"bees, honey"\n')
    (root / "queries.csv").write_text('id,query,relevant\nx,"honey?",b\ny,both,a;b\n')
    ds = load_dataset(root)
    assert ds.doc_texts == ["alpha", "Bee bees, honey"]
    assert ds.qrels == {"x": {"b": 1}, "y": {"a": 1, "b": 1}}


@pytest.mark.parametrize(
    "files, needle",
    [
        ({}, "no corpus.jsonl"),
        ({"corpus.jsonl": '{"_id": "a", "text": "x"}\n'}, "no qrels/ folder"),
        ({"corpus.jsonl": '{"_id": "a", "text": "x"}\nnot json\n', "queries.jsonl": ""}, "corpus.jsonl:2"),
        ({"corpus.jsonl": '{"text": "x"}\n', "queries.jsonl": ""}, "no '_id'"),
        (
            {"corpus.jsonl": '{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "queries.jsonl": ""},
            "duplicate document id",
        ),
        ({"corpus.jsonl": '{"_id": "a", "text": "x"}\n', "queries.jsonl": '{"query": "q"}\n'}, "no 'relevant'"),
        (
            {"corpus.jsonl": '{"_id": "a", "text": "x"}\n', "queries.jsonl": '{"query": "q", "relevant": {"a": 0}}\n'},
            "names no relevant",
        ),
        (  # every query skipped for an empty judgement list: nothing left to evaluate
            {"corpus.jsonl": '{"_id": "a", "text": "x"}\n', "queries.jsonl": '{"query": "q", "relevant": []}\n'},
            "no query has a relevance judgement (1 skipped for an empty judgement list)",
        ),
        (
            {"corpus.jsonl": '{"_id": "a", "text": "x"}\n', "queries.jsonl": '{"query": "", "relevant": ["a"]}\n'},
            "non-empty",
        ),
        ({"corpus.csv": "id,body\na,x\n", "queries.jsonl": ""}, "missing column(s) text"),
        ({"corpus.jsonl": '{"_id": "a", "text": "x"}\n', "queries.jsonl": ""}, "no query has a relevance judgement"),
    ],
)
def test_bad_data_sets_name_the_problem(tmp_path, files, needle):
    root = tmp_path / "bad"
    root.mkdir()
    for name, text in files.items():
        (root / name).write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_dataset(root)
    assert err.value.field == "dataset"
    assert needle in str(err.value)


def test_trec_qrels_are_read_like_beir_ones(tmp_path):
    # the 4-column TREC form (trec_eval, ranx, pytrec_eval, ir_datasets): spaces or tabs, no header
    expected = {"q1": {"d1": 1}, "q2": {"d3": 2, "d2": 0}}
    for text in ("q1 0 d1 1\nq2 0 d3 2\nq2 0 d2 0\n", "q1\t0\td1\t1\nq2\t0\td3\t2\r\nq2  0   d2 0\n\n"):
        root = beir(tmp_path / str(len(text)))
        (root / "qrels" / "test.tsv").write_text(text)
        ds = load_dataset(root)
        assert ds.qrels == expected and ds.queries == {"q2": "second", "q1": "first"}
    # BEIR's TSV with or without its header, a trailing tab tolerated
    for text in ("q1\td1\t1\nq2\td3\t2\nq2\td2\t0\n",
                 "query-id\tcorpus-id\tscore\nq1\td1\t1\t\nq2\td3\t2\nq2\td2\t0\n"):
        root = beir(tmp_path / f"beir{len(text)}")
        (root / "qrels" / "test.tsv").write_text(text)
        assert load_dataset(root).qrels == expected
    # BEIR ids may hold spaces: three tab-separated fields are BEIR whatever the spaces say
    root = beir(tmp_path / "spaces")
    write_jsonl(root / "corpus.jsonl", [{"_id": "doc 1", "text": "x"}, {"_id": "12 b", "text": "y"}])
    (root / "qrels" / "test.tsv").write_text("q1\tdoc 1\t1\nq1\t12 b\t1\n")
    assert load_dataset(root).qrels == {"q1": {"doc 1": 1, "12 b": 1}}


@pytest.mark.parametrize(
    "text, needle",
    [
        ("q1 0 d1 1\nq1 0 d2\n", "test.tsv:2: expected query-id iteration doc-id relevance"),
        ("q1 0 d1 1\nq2\td3\t1\n", "test.tsv:2: expected query-id iteration doc-id relevance"),  # forms mixed
        ("q1\td1\t1\nq2 0 d3 1\n", "test.tsv:2: expected query-id<TAB>corpus-id<TAB>score"),  # forms mixed
        ("query-id\tcorpus-id\tscore\nq1 d1 1\n", "test.tsv:2: expected BEIR qrels"),  # neither form
        ("q1 Q0 d1 1\n", "test.tsv:1: expected BEIR qrels"),  # the iteration must be a number
        ("q1 0 d1 high\n", "test.tsv:1: score 'high' is not a number"),
        ("q1\td1\t\n", "test.tsv:1: expected BEIR qrels"),
    ],
)
def test_bad_qrels_lines_name_file_and_line(tmp_path, text, needle):
    root = beir(tmp_path)
    (root / "qrels" / "test.tsv").write_text(text)
    with pytest.raises(InvalidInput) as err:
        load_dataset(root)
    assert err.value.field == "dataset" and needle in str(err.value), str(err.value)


def test_judgements_of_documents_not_in_the_corpus_are_counted_and_warned_once(tmp_path, caplog):
    root = beir(tmp_path)
    (root / "qrels" / "test.tsv").write_text("q1\td1\t1\nq1\tdl\t1\nq2\td3\t2\nq2\tgone\t0\nq2\td99\t1\n")
    with caplog.at_level("WARNING", logger="qrank.eval.data"):
        ds = load_dataset(root)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1, warnings
    assert "3 judgements (2 of them relevant) in 2 queries name 3 documents" in warnings[0]
    assert "q1: dl" in warnings[0] and "q2: gone, d99" in warnings[0]
    # kept (BEIR sets have such qrels), counted where the report reads them
    assert ds.qrels["q1"] == {"d1": 1, "dl": 1}
    note = ds.summary()["notes"]["unknown_judged_docs"]
    assert note == {"judgements": 3, "relevant": 2, "documents": 3, "queries": 2,
                    "examples": {"q2": ["gone", "d99"], "q1": ["dl"]}}
    # a subset counts its own queries
    assert subset(ds, max_queries=1).notes()["unknown_judged_docs"]["judgements"] == 2
    assert "notes" not in load_dataset(beir(tmp_path / "clean")).summary()


def test_queries_with_an_empty_judgement_list_are_skipped_once(tmp_path, caplog):
    root = tmp_path / "mine"
    root.mkdir()
    write_jsonl(root / "corpus.jsonl", [{"id": "a", "text": "alpha"}, {"id": "b", "text": "beta"}])
    write_jsonl(
        root / "queries.jsonl",
        [
            {"id": "x", "query": "alpha?", "relevant": ["a"]},
            {"id": "e1", "query": "unjudged", "relevant": []},
            {"id": "e2", "query": "unjudged too", "relevant": {}},
            {"id": "y", "query": "beta?", "relevant": {"b": 1}},
        ],
    )
    with caplog.at_level("WARNING", logger="qrank.eval.data"):
        ds = load_dataset(root)
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["2 queries have an empty judgement list and are skipped (e.g. e1, e2)"]
    assert ds.queries == {"x": "alpha?", "y": "beta?"} and set(ds.qrels) == {"x", "y"}
    assert ds.summary()["notes"] == {"skipped_queries": {"count": 2, "reason": "empty judgement list",
                                                         "examples": ["e1", "e2"]}}
    assert subset(ds, max_queries=1).skipped == ["e1", "e2"]
    # the CSV layout: an empty "relevant" cell
    csv_root = tmp_path / "csv"
    csv_root.mkdir()
    (csv_root / "corpus.csv").write_text("id,text\na,alpha\n")
    (csv_root / "queries.csv").write_text('id,query,relevant\nx,alpha?,a\nz,nothing judged,\n')
    ds = load_dataset(csv_root)
    assert list(ds.queries) == ["x"] and ds.skipped == ["z"]
    # a duplicate id is still one, skipped or not
    write_jsonl(root / "queries.jsonl", [{"id": "e", "query": "q", "relevant": []},
                                         {"id": "e", "query": "q", "relevant": ["a"]}])
    with pytest.raises(InvalidInput, match="duplicate query id"):
        load_dataset(root)


def test_missing_folder_and_beir_query_gap(tmp_path):
    with pytest.raises(InvalidInput, match="is not a folder"):
        load_dataset(tmp_path / "nope")
    root = beir(tmp_path)
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq9\td1\t1\n")
    with pytest.raises(InvalidInput, match="not in queries.jsonl"):
        load_dataset(root)


def test_subset_keeps_judged_documents_and_is_reproducible():
    ids = [f"d{i}" for i in range(50)]
    qrels = {f"q{i}": {f"d{40 + i}": 1} for i in range(5)}
    ds = Dataset("x", ids, [f"text {i}" for i in ids], {q: q for q in qrels}, qrels)
    small = subset(ds, max_queries=3, max_docs=10, seed=1)
    assert list(small.queries) == ["q0", "q1", "q2"]
    assert len(small.doc_ids) == 10 and {"d40", "d41", "d42"} <= set(small.doc_ids)
    assert small.doc_ids == sorted(small.doc_ids, key=ids.index)  # corpus order kept
    assert subset(ds, max_queries=3, max_docs=10, seed=1).doc_ids == small.doc_ids
    assert small.doc_texts == [f"text {d}" for d in small.doc_ids]
    with pytest.raises(InvalidInput) as err:
        subset(ds, max_docs=0)
    assert err.value.field == "max_docs"


def test_fingerprints_follow_content():
    a = Dataset("x", ["d"], ["t"], {"q": "a"}, {"q": {"d": 1}})
    b = Dataset("x", ["d"], ["t2"], {"q": "a"}, {"q": {"d": 1}})
    assert a.corpus_fingerprint() != b.corpus_fingerprint()
    assert a.queries_fingerprint() == b.queries_fingerprint()
    assert a.fingerprint() != b.fingerprint()


def test_system_names_and_config_checks():
    assert parse_systems("bm25,hybrid+rerank,bm25") == ["bm25", "hybrid+rerank"]
    for spec, field in [("bm25,colbert", "systems"), ("", "systems")]:
        with pytest.raises(InvalidInput) as err:
            parse_systems(spec)
        assert err.value.field == field
    with pytest.raises(InvalidInput) as err:
        EvalConfig(systems=["dense"])
    assert err.value.field == "embedder"
    with pytest.raises(InvalidInput) as err:
        EvalConfig(systems=["bm25+rerank"])
    assert err.value.field == "reranker"
    with pytest.raises(InvalidInput) as err:
        EvalConfig(systems=["bm25"], depth=5, k=10)
    assert err.value.field == "k"
    with pytest.raises(InvalidInput) as err:
        EvalConfig(systems=["bm25"], sweep=[10, 0])
    assert err.value.field == "sweep"
    cfg = EvalConfig(systems=["bm25"], depth=50, sweep=[200, 10])
    assert cfg.sweep == [10, 200] and cfg.retrieve_depth == 200

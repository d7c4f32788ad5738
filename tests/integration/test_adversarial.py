"""Adversarial suite (issue 16): inputs and situations an attacker or an unlucky user produces.

Each test first reproduces the attack as it was found (NaN metadata, huge filters, corrupt stores, names
with control characters, concurrent writers, forged Host headers, busy ports) and then checks the clear
answer: a 4xx naming the field, one error line, never a 500 or a traceback. Servers bind to 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import json
import math
import sqlite3

import httpx
import numpy as np
import pytest
from index_fakes import BowModel

from qrank import Embedder, Settings
from qrank.errors import InvalidInput
from qrank.index.documents import read_paths, to_documents
from qrank.index.faiss_store import FaissStore
from qrank.index.store import MAX_FILTER_KEYS, Passage, check_filter
from qrank.pipeline import Pipeline
from qrank.settings import IndexSettings

pytest.importorskip("faiss")

NONFINITE = [float("nan"), float("inf"), float("-inf")]


def _settings(tmp_path) -> Settings:
    return Settings(home=tmp_path / "home", cache={"enabled": False})


def _pipeline(settings, name="docs") -> Pipeline:
    return Pipeline.open(name, embedder=Embedder(BowModel()), settings=settings)


# --- 1. NaN / Infinity in metadata --------------------------------------------------------------------
@pytest.mark.parametrize("bad", NONFINITE)
@pytest.mark.parametrize(
    "shape, field",
    [
        (lambda v: {"x": v}, "documents[0].metadata.x"),
        (lambda v: {"a": {"b": [1, v]}}, "documents[0].metadata.a.b[1]"),
    ],
)
def test_nonfinite_metadata_is_refused_at_ingest_naming_the_field(tmp_path, bad, shape, field):
    with _pipeline(_settings(tmp_path)) as p:
        with pytest.raises(InvalidInput) as err:
            p.add([{"id": "a", "text": "bread", "metadata": shape(bad)}])
        assert err.value.field == field
        assert p.collection.store.count() == 0


def test_nonfinite_metadata_refused_in_every_api_spelling():
    from qrank.index.documents import Document

    with pytest.raises(InvalidInput, match=r"metadata\[0\]\.y"):
        to_documents(["t"], ids=["a"], metadata=[{"y": float("inf")}])
    with pytest.raises(InvalidInput, match=r"documents\[0\]\.metadata\.z"):
        to_documents([Document("a", "t", None, {"z": float("nan")})])


def test_nonfinite_metadata_refused_in_jsonl_files(tmp_path):
    f = tmp_path / "docs.jsonl"
    # Python's json module (and many writers) spell NaN/Infinity this way; json.loads accepts them
    f.write_text('{"id": "a", "text": "bread", "metadata": {"x": NaN}}\n'
                 '{"id": "b", "text": "milk", "metadata": {"y": [Infinity]}}\n')
    with pytest.raises(InvalidInput, match=r"docs.jsonl:1: metadata\.x"):
        read_paths([f])


def test_cli_index_add_of_nonfinite_metadata_is_one_line_naming_the_field(tmp_path, capsys):
    from qrank.cli import main

    f = tmp_path / "docs.jsonl"
    f.write_text('{"id": "a", "text": "bread", "metadata": {"price": {"eur": Infinity}}}\n')
    rc = main(["index", "add", "--collection", "c", "--embedder", "unused", str(f), "--home", str(tmp_path / "h")])
    err = capsys.readouterr().err
    assert rc == 2 and "metadata.price.eur" in err and "finite" in err and "Traceback" not in err
    assert len([line for line in err.splitlines() if line.strip()]) == 1
    assert not (tmp_path / "h" / "collections" / "c").exists()


def test_csv_cells_spelling_nan_stay_strings(tmp_path):
    f = tmp_path / "docs.csv"
    f.write_text("id,text,x\na,bread,NaN\n")
    [doc] = read_paths([f])
    assert doc.metadata == {"x": "NaN"}


def test_store_never_writes_nonfinite_json(tmp_path):
    store = FaissStore(tmp_path, 4, IndexSettings())
    with pytest.raises(ValueError):
        store.add([Passage("a", 0, 0, "t", metadata={"x": float("nan")})], np.eye(1, 4, dtype=np.float32))
    assert store.count() == 0


def _write_bad_row(store_path, doc_id: str, metadata: str) -> None:
    """What an older qrank (or a hand edit) left behind: metadata SQLite cannot parse as JSON."""
    db = sqlite3.connect(store_path)
    db.execute("UPDATE passages SET metadata = ? WHERE doc_id = ?", (metadata, doc_id))
    db.commit()
    db.close()


@pytest.mark.parametrize("raw", ['{"g": NaN}', '{"g": Infinity}', "{not json"])
def test_filtered_search_over_a_stored_bad_row_skips_it(tmp_path, raw):
    settings = _settings(tmp_path)
    with _pipeline(settings) as p:
        p.add([{"id": "a", "text": "bread butter", "metadata": {"g": 1}},
               {"id": "b", "text": "bread jam", "metadata": {"g": 1}}])
    _write_bad_row(settings.home / "collections" / "docs" / "store.sqlite", "a", raw)
    with _pipeline(settings) as p:
        hits = p.search("bread", filter={"g": 1}, rerank=False)
        assert [h.id for h in hits] == ["b"]  # the bad row matches nothing; the query does not fail
        hits = p.search("bread", rerank=False)  # unfiltered: the row is found, its metadata reads as {}
        assert {h.id for h in hits} == {"a", "b"}
        assert next(h for h in hits if h.id == "a").metadata == {}
        assert all(not isinstance(v, float) or math.isfinite(v) for h in hits for v in h.metadata.values())


def test_filter_with_many_keys_is_a_clear_error(tmp_path):
    many = {f"k{i}": 1 for i in range(999)}
    with pytest.raises(InvalidInput, match="at most"):
        check_filter(many)
    check_filter({f"k{i}": 1 for i in range(MAX_FILTER_KEYS)})
    with pytest.raises(InvalidInput, match="values"):
        check_filter({"k": list(range(5000))})
    with pytest.raises(InvalidInput):
        check_filter({"k\n": 1})  # "$" in a pattern matches before a trailing newline
    with _pipeline(_settings(tmp_path)) as p:
        p.add([{"id": "a", "text": "bread", "metadata": {"k0": 1}}])
        with pytest.raises(InvalidInput, match="filter"):
            p.search("bread", filter=many, rerank=False)
        # the largest filter allowed runs in SQLite (no "Expression tree is too large")
        assert p.search("bread", filter={f"k{i}": 1 if i == 0 else [1, 2] for i in range(MAX_FILTER_KEYS)},
                        rerank=False) == []


# --- 1. over HTTP ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def bow_server(tmp_path_factory):
    pytest.importorskip("fastapi")
    from _server_support import live_server, server_settings

    home = tmp_path_factory.mktemp("adv-home")
    with (live_server(server_settings(home=home), embedders={"bow": Embedder(BowModel())}) as url,
          httpx.Client(base_url=url, timeout=60) as client):
        yield client, home


@pytest.mark.parametrize("raw", ['{"x": NaN}', '{"x": Infinity}', '{"x": {"y": [-Infinity]}}'])
def test_http_add_with_nonfinite_metadata_is_422_naming_the_field(bow_server, raw):
    client, _ = bow_server
    body = '{"documents": [{"id": "a", "text": "bread", "metadata": ' + raw + "}]}"
    r = client.post("/v1/collections/web/documents", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"].startswith("documents[0].metadata.x")
    r = client.post("/v1/collections/web/documents", content=body.replace('"metadata": ', '"ids": ["a"], "x": '),
                    headers={"content-type": "application/json"})
    assert r.status_code < 500


def test_http_filtered_search_over_bad_row_and_huge_filter_never_500(bow_server):
    client, home = bow_server
    r = client.post(
        "/v1/collections/bad/documents",
        json={
            "documents": [{"id": "a", "text": "bread butter", "metadata": {"g": 1}},
                          {"id": "b", "text": "bread jam", "metadata": {"g": 1}}]
        },
    )
    assert r.status_code == 200, r.text
    _write_bad_row(home / "collections" / "bad" / "store.sqlite", "a", '{"g": NaN}')
    for _ in range(2):  # the same keep-alive connection keeps working
        r = client.post("/v1/search", json={"collection": "bad", "query": "bread", "filter": {"g": 1}, "rerank": False})
        assert r.status_code == 200, r.text
        assert [h["id"] for h in r.json()["results"]] == ["b"]
        r = client.post("/v1/search", json={"collection": "bad", "query": "bread", "rerank": False})
        assert r.status_code == 200, r.text
        r = client.post("/v1/search", json={"collection": "bad", "query": "bread", "rerank": False,
                                            "filter": {f"k{i}": 1 for i in range(1000)}})
        assert r.status_code == 422 and r.json()["error"]["field"] == "filter", r.text
        r = client.post("/v1/search", json={"collection": "bad", "query": "bread", "mode": "bm25",
                                            "filter": {f"k{i}": 1 for i in range(1000)}})
        assert r.status_code == 422, r.text
    assert json.loads(client.get("/health").text) == {"status": "ok"}


def test_bm25_over_documents_without_an_indexable_word_finds_nothing_instead_of_500(bow_server):
    """bm25s cannot index a corpus whose every word is a stopword or one letter ('a', 'the'): the search was a
    500 (found 2026-12-07). BM25 finds nothing, dense and hybrid search still work, and a restart (the index
    read back from disk) behaves the same."""
    from qrank.index.bm25 import BM25Index

    client, home = bow_server
    r = client.post("/v1/collections/stop/documents", json={"documents": [{"id": "a", "text": "a"},
                                                                          {"id": "b", "text": "the"}]})
    assert r.status_code == 200, r.text
    for mode in ("bm25", "hybrid", "dense"):
        r = client.post("/v1/search", json={"collection": "stop", "query": "hello the", "mode": mode, "rerank": False})
        assert r.status_code == 200, (mode, r.text)
        if mode == "bm25":
            assert r.json()["results"] == []
    reread = BM25Index(home / "collections" / "stop")
    folders = sorted((home / "collections" / "stop").glob("bm25.*"))
    assert folders, "no BM25 index was saved"
    reread.ensure(int(folders[-1].name.split(".")[1]), lambda: pytest.fail("rebuilt instead of read back"))
    assert reread.search("the", 5) == []


# --- 6. corrupt stores, names, concurrent writers ------------------------------------------------------
def _cli(capsys, *argv):
    from qrank.cli import main

    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture
def notes_home(tmp_path):
    settings = Settings(home=tmp_path / "home", cache={"enabled": False})
    with _pipeline(settings, "notes") as p:
        p.add(
            [{"id": f"d{i}", "text": f"bread number {i}", "metadata": {"g": i % 2}} for i in range(6)], progress=False
        )
    return settings.home


@pytest.mark.parametrize("damage", ["garbage", "zero", "missing"])
def test_corrupt_store_gives_one_clear_line_and_drop_still_works(notes_home, capsys, tmp_path, damage):
    db = notes_home / "collections" / "notes" / "store.sqlite"
    for extra in db.parent.glob("store.sqlite-*"):
        extra.unlink()
    if damage == "garbage":
        db.write_bytes(b"\x00garbage, not a database\xff" * 512)
    elif damage == "zero":
        db.write_bytes(b"")  # SQLite would read this as a new, empty database
    else:
        db.unlink()
    docs = tmp_path / "more.jsonl"
    docs.write_text('{"id": "x", "text": "more bread"}\n')
    home = ["--home", str(notes_home)]
    for argv in (["index", "info", "notes"], ["search", "--collection", "notes", "bread", "--no-rerank"],
                 ["index", "add", "--collection", "notes", str(docs)], ["index", "check", "notes"]):
        rc, out, err = _cli(capsys, *argv, *home)
        assert rc != 0, argv
        assert "Traceback" not in err + out
        if argv[1] != "check":
            lines = [line for line in err.splitlines() if line.strip()]
            assert len(lines) == 1 and "corrupt" in lines[0] and "index drop notes" in lines[0], (argv, err)
    rc, out, err = _cli(capsys, "index", "check", "notes", "--json", *home)
    report = json.loads(out)
    assert rc == 1 and not report["ok"] and "drop" in report["problems"][0]
    assert not (db.exists() and damage == "missing")  # nothing re-created the store behind our back
    rc, out, err = _cli(capsys, "index", "drop", "notes", *home)
    assert rc == 0, err
    assert not db.parent.exists()


def test_unreadable_manifest_can_be_dropped(notes_home, capsys):
    (notes_home / "collections" / "notes" / "collection.json").write_text("{ nope")
    rc, _, err = _cli(capsys, "index", "drop", "notes", "--home", str(notes_home))
    assert rc == 0, err
    assert not (notes_home / "collections" / "notes").exists()


def test_check_finds_and_repairs_nonfinite_metadata(notes_home, capsys):
    _write_bad_row(notes_home / "collections" / "notes" / "store.sqlite", "d1", '{"g": NaN, "h": [Infinity, 2]}')
    rc, out, _ = _cli(capsys, "index", "check", "notes", "--json", "--home", str(notes_home))
    report = json.loads(out)
    assert rc == 1 and not report["ok"] and "d1" in report["problems"][0]
    rc, out, _ = _cli(capsys, "index", "check", "notes", "--repair", "--json", "--home", str(notes_home))
    assert rc == 0 and json.loads(out)["ok"], out
    with Pipeline.open("notes", embedder=Embedder(BowModel()), settings=Settings(home=notes_home)) as p:
        assert p.collection.store.get(["d1"])["d1"][0].metadata == {"g": None, "h": [None, 2]}
        assert {h.id for h in p.search("bread", filter={"g": 1}, rerank=False)} == {"d3", "d5"}
    rc, out, _ = _cli(capsys, "index", "check", "notes", "--home", str(notes_home))
    assert rc == 0 and "notes: ok (6 documents)" in out


@pytest.mark.parametrize("name", ["docs\n", "docs ", " docs", "do\tcs", "do\x00cs", "docs\r\n", "ünï", "a/b", "..", ""])
def test_collection_names_with_whitespace_or_control_characters_are_refused(tmp_path, capsys, name):
    from qrank.index.collection import check_name

    with pytest.raises(InvalidInput) as err:
        check_name(name)
    assert err.value.field == "collection"
    with pytest.raises(InvalidInput):
        _pipeline(_settings(tmp_path), name)
    assert not (tmp_path / "home" / "collections").exists() or not any((tmp_path / "home" / "collections").iterdir())


def test_concurrent_adds_of_one_collection_do_the_work_once(tmp_path):
    import threading

    settings = _settings(tmp_path)
    docs = [{"id": f"d{i}", "text": f"word{i} bread"} for i in range(40)]
    with _pipeline(settings):
        pass  # the collection exists: both writers open it
    models = [BowModel(delay=0.01), BowModel(delay=0.01)]
    reports: list[dict] = []
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def add(model):
        try:
            # separate Pipeline objects: separate SQLite connections, as two processes would have
            with Pipeline.open("docs", embedder=Embedder(model), settings=settings) as p:
                start.wait()
                reports.append(p.add(docs, progress=False))
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(m,)) for m in models]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert sum(m.texts for m in models) == 40  # embedded once, not twice
    assert sorted((r["added"], r["unchanged"]) for r in reports) == [(0, 40), (40, 0)]


# --- 7. Host allow-list (DNS rebinding), open probes, no private paths in errors -------------------------
@contextlib.contextmanager
def _bow_client(home, **server):
    from _server_support import live_server, server_settings

    with (live_server(server_settings(home=home, **server), embedders={"bow": Embedder(BowModel())}) as url,
          httpx.Client(base_url=url, timeout=60) as client):
        yield client


@pytest.mark.parametrize("forged", ["attacker.example", "attacker.example:8000", "127.0.0.1.nip.io", "0.0.0.0",
                                    "localhost.attacker.example"])
def test_forged_host_is_refused_before_anything_runs(bow_server, forged):
    client, home = bow_server
    r = client.post("/v1/collections/rebound/documents", json={"documents": ["secret"]}, headers={"host": forged})
    assert r.status_code == 400 and r.json()["error"]["field"] == "host", r.text
    assert not (home / "collections" / "rebound").exists()
    assert client.get("/v1/models", headers={"host": forged}).status_code == 400


@pytest.mark.parametrize("ok", ["localhost", "LOCALHOST.:1234", "127.0.0.1:9", "[::1]:8000", "127.0.0.2"])
def test_loopback_hosts_are_answered(bow_server, ok):
    client, _ = bow_server
    r = client.get("/v1/models", headers={"host": ok})
    assert r.status_code == 200, r.text


def test_allowed_hosts_setting(tmp_path):
    with _bow_client(tmp_path, allowed_hosts=["api.example"]) as client:
        assert client.get("/health", headers={"host": "api.example:443"}).status_code == 200
        assert client.get("/health", headers={"host": "localhost"}).status_code == 400
    with _bow_client(tmp_path, allowed_hosts=["*"]) as client:
        assert client.get("/health", headers={"host": "anything.example"}).status_code == 200


def test_error_bodies_do_not_reveal_the_data_folder(bow_server):
    client, home = bow_server
    for r in (client.post("/v1/search", json={"collection": "nope", "query": "x"}),
              client.post("/v1/search", json={"collection": "bad name", "query": "x"}),
              client.get("/v1/nothing/here")):
        assert 400 <= r.status_code < 500, r.text
        assert str(home) not in r.text and str(home.resolve()) not in r.text


def test_probes_need_no_key_and_answer_head(tmp_path):
    with _bow_client(tmp_path, api_key="k3y") as client:
        for path in ("/health", "/ready"):
            assert client.get(path).status_code == 200, path
            r = client.head(path)
            assert r.status_code == 200 and r.content == b"", path
        assert client.get("/metrics").status_code == 401
        assert client.get("/v1/models").status_code == 401
        assert client.post("/health", json={}).status_code in (401, 405)
        assert client.get("/v1/models", headers={"authorization": "Bearer k3y"}).status_code == 200


def test_ui_redirect_is_relative(tmp_path):
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    from _server_support import server_settings

    from qrank.server import ModelPool, create_app
    from qrank.server.run import running_server
    from qrank.ui import mount_ui

    settings = server_settings(home=tmp_path, allowed_hosts=["*"])
    bow = Embedder(BowModel())
    app = create_app(settings, ModelPool.from_models(embedders={"bow": bow}))
    mount_ui(app, settings, embedders={"bow": bow})
    with running_server(app, settings) as running, httpx.Client(base_url=running.url, timeout=60) as client:
        r = client.get("/ui", headers={"host": "attacker.example"})
        assert r.status_code in (301, 302, 307, 308) and r.headers["location"] == "/ui/", r.headers


# --- 12. busy ports: bind first, then announce; one line, no traceback --------------------------------
@pytest.fixture
def busy_port():
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    yield sock.getsockname()[1]
    sock.close()


def _qrank_cli(*argv: str, timeout: float = 300):
    import os
    import subprocess
    import sys

    code = "import sys; from qrank.cli import main; sys.exit(main(sys.argv[1:]))"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GRADIO_ANALYTICS_ENABLED": "False"}
    return subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=timeout, env=env,
                          check=False)


def _one_error_line(proc) -> str:
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0, text
    assert "Traceback" not in text and "share=True" not in text and "serving on" not in text, text
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, text
    return lines[0]


def test_serve_on_a_busy_port_fails_in_one_line_before_loading(busy_port, tmp_path):
    pytest.importorskip("uvicorn")
    # the model does not exist: binding comes first, so the port is what the error names
    proc = _qrank_cli("serve", "--reranker", str(tmp_path / "no-model"), "--port", str(busy_port))
    line = _one_error_line(proc)
    assert f"127.0.0.1:{busy_port}" in line and "in use" in line, line


def test_ui_on_a_busy_port_fails_in_one_line(busy_port, tmp_path):
    pytest.importorskip("gradio", reason="the ui extra is not installed")
    proc = _qrank_cli("ui", "--port", str(busy_port), "--home", str(tmp_path))
    line = _one_error_line(proc)
    assert f"127.0.0.1:{busy_port}" in line and "in use" in line, line


def test_launch_ui_announces_only_after_binding_and_never_hints_share(busy_port, tmp_path, capfd):
    gr = pytest.importorskip("gradio", reason="the ui extra is not installed")
    from qrank.errors import QrankError
    from qrank.server.run import free_port
    from qrank.ui.layout import launch_ui

    with gr.Blocks() as blocks:
        gr.Markdown("hi")
    announced: list[str] = []
    settings = Settings(home=tmp_path, ui={"port": busy_port})
    with pytest.raises(QrankError, match="in use"):
        launch_ui(blocks, settings, block=False, announce=announced.append)
    assert announced == []
    port = free_port()
    launch_ui(blocks, Settings(home=tmp_path, ui={"port": port}), block=False, announce=announced.append)
    try:
        assert announced == [f"http://127.0.0.1:{port}/"]
        assert httpx.get(announced[0], timeout=30).status_code == 200
    finally:
        blocks.close()
    out, err = capfd.readouterr()
    assert "share=True" not in out + err


# --- 8. OpenAPI: JSON Schema bounds, qrank's error body, every error status documented ----------------
ERROR_STATUSES = ("400", "401", "404", "413", "422", "429")


def _spec() -> dict:
    pytest.importorskip("fastapi")
    from qrank.server import create_app

    return create_app(Settings()).openapi()


def _schema_dicts(node, in_properties: bool = False):
    """Every schema object in a JSON document (the names under "properties" are field names, not keywords)."""
    if isinstance(node, dict):
        if not in_properties:
            yield node
        for key, value in node.items():
            if key == "properties" and isinstance(value, dict):
                for sub in value.values():
                    yield from _schema_dicts(sub)
            else:
                yield from _schema_dicts(value, in_properties=False)
    elif isinstance(node, list):
        for item in node:
            yield from _schema_dicts(item)


def test_openapi_publishes_json_schema_and_qrank_errors():
    jsonschema = pytest.importorskip("jsonschema")
    spec = _spec()
    assert spec["openapi"].startswith("3.1")  # 3.1 schemas are JSON Schema 2020-12
    for schema in spec["components"]["schemas"].values():
        jsonschema.Draft202012Validator.check_schema(schema)
    pydantic_only = {"ge", "le", "gt", "lt", "multiple_of", "min_length", "max_length"}
    bad = [sorted(set(d) & pydantic_only) for d in _schema_dicts(spec) if set(d) & pydantic_only]
    assert not bad, bad
    top_n = spec["components"]["schemas"]["RerankRequest"]["properties"]["top_n"]["anyOf"][0]
    assert top_n == {"type": "integer", "minimum": 1, "maximum": 2**31 - 1}
    assert "HTTPValidationError" not in spec["components"]["schemas"]
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            for status in ERROR_STATUSES:
                ref = op["responses"].get(status, {}).get("content", {}).get("application/json", {}).get("schema")
                assert ref == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, status)


def test_real_error_bodies_match_the_published_error_schema(tmp_path):
    jsonschema = pytest.importorskip("jsonschema")
    spec = _spec()
    schema = {"$ref": "#/components/schemas/ErrorResponse", "components": spec["components"]}
    validator = jsonschema.Draft202012Validator(schema)
    with _bow_client(tmp_path, api_key="k", max_body_bytes=2048) as client:
        key = {"authorization": "Bearer k"}
        answers = [
            client.get("/v1/models"),  # 401
            client.get("/v1/models", headers={**key, "host": "attacker.example"}),  # 400 host
            client.post("/v1/embeddings", content=b"{nope", headers={**key, "content-type": "application/json"}),
            client.post("/v1/embeddings", json={"input": 3}, headers=key),  # 422
            client.post("/v1/embeddings", json={"input": "x", "model": "nope"}, headers=key),  # 404
            client.post("/v1/embeddings", json={"input": "x" * 4096}, headers=key),  # 413
            client.get("/no/route", headers=key),  # 404
        ]
        assert sorted({r.status_code for r in answers}) == [400, 401, 404, 413, 422]
        for r in answers:
            validator.validate(r.json())


@pytest.fixture(scope="module")
def fuzz_target():
    pytest.importorskip("schemathesis")
    from _server_support import live_server, server_settings
    from index_fakes import fake_embedder, fake_reranker

    limits = server_settings(max_documents=16, max_inputs=16, max_document_chars=2000, max_body_bytes=256 * 1024)
    with live_server(limits, rerankers={"r": fake_reranker()}, embedders={"e": fake_embedder()}) as url:
        yield url


def _fuzz_all_checks(url: str, mode: str, examples: int) -> dict[int, int]:
    """Schemathesis with every built-in check on. Two expectations are widened, each for a stated reason:
    schema-valid data may get 413/422, because some rules JSON Schema cannot state (lists of equal length,
    the server's configured limits, a model's dimension) are checked by the server alone; and invalid data
    may be refused with 413/431 (too large: refused before the body is even parsed)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings
    from schemathesis.config import SchemathesisConfig
    from schemathesis.generation.modes import GenerationMode

    config = SchemathesisConfig.from_dict({"checks": {
        "positive_data_acceptance": {"expected-statuses": ["2xx", "401", "404", "413", "422", "429"]},
        "negative_data_rejection": {"expected-statuses": ["400", "401", "404", "405", "413", "422", "429", "431"]},
    }})
    api = schemathesis.openapi.from_url(url + "/openapi.json", config=config)
    seen: dict[int, int] = {}

    @given(case=api.as_strategy(GenerationMode(mode)))
    @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True,
              database=None)
    def check(case):
        response = case.call_and_validate(timeout=60)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1

    check()
    return seen


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_all_checks(fuzz_target, mode):
    seen = _fuzz_all_checks(fuzz_target, mode, 60)
    assert sum(seen.values()) >= 60 and all(s < 500 for s in seen), seen


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_schemathesis_all_checks_long(fuzz_target, mode):
    seen = _fuzz_all_checks(fuzz_target, mode, 1000)
    assert all(s < 500 for s in seen), seen

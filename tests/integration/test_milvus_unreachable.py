"""A collection whose Milvus server cannot be reached (down, a wrong URI, a refused connection, no answer), through
the HTTP server and the CLI: one clear error naming the collection and the URI with its password hidden (HTTP 503
with Retry-After; one line and exit status 2 on the CLI), listed as "unavailable" with the reason, while the server
stays up and serves the other collections. Real sockets throughout: a port bound and closed (refused), a port that
listens but never answers (a hung server), Milvus Lite's own gRPC server stopped under an open collection and
started again, and that server run as its own process and frozen (SIGSTOP: its connections stay open, nothing
answers) under an open collection, then thawed. No pymilvus internals are replaced."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import grpc
import httpx
import numpy as np
import pytest
from _server_support import live_server
from index_fakes import BowModel, OverlapScorer, build_bow_collection, corpus, milvus_lite_or_skip

from qrank import Embedder, Reranker, Settings
from qrank.cli import main as cli
from qrank.index.store import Passage, StoreUnavailable
from qrank.pipeline import Pipeline
from qrank.settings import IndexSettings

pytest.importorskip("faiss", reason="the index extra is not installed")


@pytest.fixture(autouse=True)
def _milvus(tmp_path):
    milvus_lite_or_skip(tmp_path)


def closed_port() -> int:
    """A port nothing listens on: bound, then closed (a connection to it is refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def silent_port():
    """A port whose connections the kernel accepts but nobody ever answers: a server that hangs."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(16)
        yield s.getsockname()[1]


def settings_for(home, **index) -> Settings:
    return Settings(home=home, cache={"enabled": False}, server={"access_log": False}, index=index)


def milvus_collection(settings: Settings, name: str, uri: str | None = None) -> None:
    """Collection ``name`` built on Milvus Lite, then, with ``uri``, recorded as living on that server instead (what a
    manifest of a cluster collection says: a wrong URI, or a cluster that moved)."""
    with Pipeline.open(name, embedder=Embedder(BowModel()), settings=settings, backend="milvus") as p:
        p.add(corpus(6), progress=False)
    if uri is not None:
        repoint(settings, name, uri)


def repoint(settings: Settings, name: str, uri: str, copy_as: str | None = None) -> None:
    manifest = json.loads((settings.home / "collections" / name / "collection.json").read_text())
    manifest["store"] = {"uri": uri, "db": None}
    if copy_as:
        name = manifest["name"] = copy_as
        (settings.home / "collections" / name).mkdir()
    (settings.home / "collections" / name / "collection.json").write_text(json.dumps(manifest))


def serve(settings: Settings):
    return live_server(settings, rerankers={"overlap": Reranker(OverlapScorer())},
                       embedders={"bow": Embedder(BowModel())})


def timed(call, *args, **kwargs):
    start = time.monotonic()
    out = call(*args, **kwargs)
    return out, time.monotonic() - start


def assert_unavailable(r: httpx.Response, name: str, where: str, why: str) -> None:
    assert r.status_code == 503, r.text
    assert r.headers["retry-after"] == "5" and "connection" not in r.headers  # the connection stays usable
    err = r.json()["error"]
    assert (err["type"], err["field"], err["code"]) == ("StoreUnavailable", "collection", 503)
    assert err["message"].startswith(f"collection {name!r}: the vector store at {where} cannot be reached ({why})")
    assert r.json()["message"] == err["message"]


def search(http: httpx.Client, name: str) -> httpx.Response:
    return http.post("/v1/search", json={"collection": name, "query": "sourdough bread", "rerank": False})


def test_refused_connection_is_a_503_naming_the_collection_and_the_others_are_served(tmp_path):
    home = tmp_path / "home"
    build_bow_collection(settings_for(home), "good")
    port = closed_port()
    milvus_collection(settings_for(home), "remote", f"http://root:s3cret@127.0.0.1:{port}")
    where = f"http://root:***@127.0.0.1:{port}"
    # a token in the settings as well: neither it nor the URI's password ever reaches a client
    settings = settings_for(home, milvus_token="tok-s3cret")
    with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
        for _ in range(2):  # nothing is remembered: each request tries again, and fails as fast
            r, took = timed(search, http, "remote")
            assert_unavailable(r, "remote", where, "connection refused")
            assert took < 5 and "s3cret" not in r.text
            r, took = timed(http.post, "/v1/collections/remote/documents", json={"documents": ["more bread"]})
            assert_unavailable(r, "remote", where, "connection refused")
            assert took < 5 and "s3cret" not in r.text
        assert http.get("/health").status_code == 200
        r = search(http, "good")
        assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
        listed = {c["name"]: c for c in http.get("/v1/collections").json()["data"]}
        assert (listed["good"]["status"], listed["good"]["count"]) == ("ok", 6)
        remote = listed["remote"]
        assert (remote["status"], remote["count"], remote["backend"], remote["dim"]) == ("unavailable", None,
                                                                                       "milvus", 64)
        assert remote["reason"] == f"the vector store at {where} cannot be reached (connection refused)"


def test_milvus_going_away_under_an_open_collection_and_coming_back(tmp_path):
    from milvus_lite.adapter.grpc.server import start_server_in_thread

    data = str(tmp_path / "milvus-data")
    server, db, port = start_server_in_thread(data, port=0)
    where = f"http://127.0.0.1:{port}"
    settings = settings_for(tmp_path / "home", milvus_uri=where)  # new collections stay FAISS unless told
    build_bow_collection(settings, "good")
    with _pymilvus_records() as records:
        try:
            milvus_collection(settings, "remote")
            with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
                r = search(http, "remote")
                assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
                server.stop(grace=0).wait()  # the server goes away: its port now refuses connections
                db.close()
                r, took = timed(search, http, "remote")
                assert_unavailable(r, "remote", where, "connection refused")
                assert took < 5
                r = http.post("/v1/collections/remote/documents", json={"documents": ["more bread"]})
                assert_unavailable(r, "remote", where, "connection refused")
                r = search(http, "good")
                assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
                listed = {c["name"]: c for c in http.get("/v1/collections").json()["data"]}
                remote = listed["remote"]
                assert remote["status"] == "unavailable" and "connection refused" in remote["reason"]
                # said once, by qrank: pymilvus's own ERROR lines with tracebacks are not repeated in the log
                assert not records, [r.getMessage()[:200] for r in records]

                server, db, again = start_server_in_thread(data, port=port)  # back, with its data
                assert again == port
                # a cluster keeps its collections loaded across a restart; Milvus Lite's test server forgets that, so a
                # client of the test's own loads it again (once gRPC dials the address again: about a second)
                from pymilvus import MilvusClient

                deadline = time.monotonic() + 15
                while True:
                    try:
                        loader = MilvusClient(uri=where, dedicated=True, timeout=1.0)
                        loader.load_collection("qrank_remote")
                        loader.close()
                        break
                    except Exception:
                        if time.monotonic() > deadline:
                            raise
                        time.sleep(0.2)
                while (r := search(http, "remote")).status_code == 503 and time.monotonic() < deadline:
                    time.sleep(0.2)  # the server's own connection comes back by itself
                assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
        finally:
            server.stop(grace=0)
            with contextlib.suppress(Exception):  # closed already when the test failed after stopping it
                db.close()


def test_a_server_that_never_answers_costs_one_connect_timeout(tmp_path):
    home = tmp_path / "home"
    build_bow_collection(settings_for(home), "good")
    with silent_port() as port:
        where = f"http://127.0.0.1:{port}"
        milvus_collection(settings_for(home), "remote", where)
        for copy in ("remote2", "remote3"):  # more collections on the same cluster
            repoint(settings_for(home), "remote", where, copy_as=copy)
        settings = settings_for(home, milvus_connect_timeout_s=1.0)
        with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
            r, took = timed(search, http, "remote")
            assert_unavailable(r, "remote", where, "no answer within 1 s")
            assert 0.9 < took < 4
            # a listing waits for an unreachable cluster once, not once per collection on it
            r, took = timed(http.get, "/v1/collections")
            listed = {c["name"]: c for c in r.json()["data"]}
            assert took < 2.7, took
            assert listed["good"]["status"] == "ok"
            for name in ("remote", "remote2", "remote3"):
                assert listed[name]["status"] == "unavailable"
                assert listed[name]["reason"] == f"the vector store at {where} cannot be reached (no answer within 1 s)"


def run(capsys, *argv):
    rc = cli(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


def test_cli_says_one_line_and_fails(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"
    port = closed_port()
    milvus_collection(settings_for(home), "remote", f"http://root:s3cret@127.0.0.1:{port}")
    monkeypatch.setenv("QRANK_INDEX__MILVUS_TOKEN", "tok-s3cret")
    (tmp_path / "more.jsonl").write_text('{"id": "x", "text": "more sourdough bread"}\n')
    moved = closed_port()

    def expected(where: str) -> str:
        return (f"error: collection 'remote': the vector store at {where} cannot be reached (connection refused); "
                "check that the server is running and that index.milvus_uri names it, then try again")

    recorded = expected(f"http://root:***@127.0.0.1:{port}")
    for argv, line in (
        (["search", "--collection", "remote", "sourdough bread", "--no-rerank"], recorded),
        (["index", "add", "--collection", "remote", str(tmp_path / "more.jsonl")], recorded),
        (["index", "info", "remote"], recorded),
        # a URI given on the command line wins over the manifest's, and is the one named
        (["search", "--collection", "remote", "bread", "--milvus-uri", f"http://u:pw@127.0.0.1:{moved}?token=k"],
         expected(f"http://u:***@127.0.0.1:{moved}?token=***")),
    ):
        (rc, out, err), took = timed(run, capsys, *argv, "--home", str(home))
        assert rc == 2 and out == "" and took < 5, (argv, rc, out, err)
        assert [x for x in err.splitlines() if x.strip()] == [line], (argv, err)
    rc, out, err = run(capsys, "index", "list", "--home", str(home))
    flat = " ".join(out.split())
    assert rc == 0 and "unavailable" in flat and "s3cret" not in out + err
    assert (f"remote: unavailable: the vector store at http://root:***@127.0.0.1:{port} cannot be reached "
            "(connection refused)") in flat


# --- a server that took the connection and then stops answering (SIGSTOP) ---------------------------------------

_SERVE = """
import sys
from milvus_lite.adapter.grpc.server import start_server_in_thread
server, db, port = start_server_in_thread(sys.argv[1], port=0)
print(port, flush=True)
server.wait_for_termination()
"""


class FrozenServer:
    """Milvus Lite's gRPC server in a process of its own, which ``frozen()`` stops with SIGSTOP: the kernel keeps its
    connections open and takes requests, and nothing answers (a hung or overloaded server), until SIGCONT."""

    def __init__(self, data) -> None:
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVE, str(data)], stdout=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        if not line.strip():
            self.close()
            pytest.fail(f"Milvus Lite's server did not start (exit status {self.proc.returncode})")
        self.uri = f"http://127.0.0.1:{int(line)}"

    @contextlib.contextmanager
    def frozen(self):
        os.kill(self.proc.pid, signal.SIGSTOP)
        try:
            yield
        finally:  # never leave a stopped process behind
            os.kill(self.proc.pid, signal.SIGCONT)

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGCONT)
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture(scope="module")
def milvus_process(tmp_path_factory):
    milvus_lite_or_skip(tmp_path_factory.mktemp("probe"))
    server = FrozenServer(tmp_path_factory.mktemp("milvus-process"))
    try:
        yield server
    finally:
        server.close()


def test_a_server_that_stops_answering_is_a_503_within_the_request_timeout_and_recovers(tmp_path, milvus_process):
    where = milvus_process.uri
    # the two deadlines differ, so the message shows which one passed: the request's
    settings = settings_for(tmp_path / "home", milvus_uri=where, milvus_request_timeout_s=1.0,
                            milvus_connect_timeout_s=3.0)
    milvus_collection(settings, "remote")
    with _pymilvus_records() as records:
        with Pipeline.open("remote", embedder=Embedder(BowModel()), settings=settings) as p:
            assert len(p.search("sourdough bread", rerank=False)) == 6
            with milvus_process.frozen():
                start = time.monotonic()
                with pytest.raises(StoreUnavailable) as e:
                    p.search("sourdough bread", rerank=False)
                took = time.monotonic() - start
                assert f"the vector store at {where} cannot be reached (no answer within 1 s)" in str(e.value)
                assert 0.9 < took < 3, took
            assert len(p.search("sourdough bread", rerank=False)) == 6  # answered again once thawed

        with serve(settings) as url, httpx.Client(base_url=url, timeout=30) as http:
            r = search(http, "remote")
            assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
            with milvus_process.frozen():
                r, took = timed(search, http, "remote")
                assert_unavailable(r, "remote", where, "no answer within 1 s")
                assert took < 3, took
                r, took = timed(http.post, "/v1/collections/remote/documents", json={"documents": ["more bread"]})
                assert_unavailable(r, "remote", where, "no answer within 1 s")
                assert took < 3, took
            r = search(http, "remote")
            assert r.status_code == 200 and len(r.json()["results"]) == 6, r.text
        assert not records, [r.getMessage()[:200] for r in records]  # said once, by qrank


@contextlib.contextmanager
def _pymilvus_records():
    """pymilvus's own WARNING-and-above records while the block runs (qrank says an unreachable server once)."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("pymilvus").addHandler(handler)
    try:
        yield records
    finally:
        logging.getLogger("pymilvus").removeHandler(handler)


def _version(tag: str, sizes: dict[str, int]) -> dict[str, list[Passage]]:
    return {d: [Passage(d, c, 10 * c, f"{d} {tag} passage {c}", None, {"v": tag}, f"{tag}-{d}") for c in range(n)]
            for d, n in sizes.items()}


def _add(store, version: dict[str, list[Passage]]) -> None:
    passages = [p for ps in version.values() for p in ps]
    rng = np.random.default_rng(len(passages))
    vectors = rng.normal(size=(len(passages), store.dim)).astype(np.float32)
    store.add(passages, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))


def _seen(store, ids) -> dict[str, list[tuple]]:
    return {d: [(p.chunk, p.text, p.hash) for p in ps] for d, ps in store.get(ids).items()}


def _exactly(store, version: dict[str, list[Passage]]) -> None:
    assert _seen(store, list(version)) == {d: [(p.chunk, p.text, p.hash) for p in ps] for d, ps in version.items()}
    assert store.hashes(list(version)) == {d: ps[0].hash for d, ps in version.items()}
    assert store.count_passages() == sum(map(len, version.values()))  # no passage left out of its document's reach


def _readd(store, version: dict[str, list[Passage]]) -> list[str]:
    """Add ``version`` as ``qrank index add`` does: a document whose stored hash is its hash is skipped as
    unchanged. Returns the documents skipped."""
    known = store.hashes(list(version))
    unchanged = [d for d, ps in version.items() if known.get(d) == ps[0].hash]
    todo = {d: ps for d, ps in version.items() if d not in unchanged}
    if todo:
        _add(store, todo)
    return unchanged


def _requests_of_a_whole_add(path, settings: IndexSettings, pid: int, before: dict, version: dict,
                             kept: dict) -> int:
    """The write requests ``version``'s add makes over ``before`` when nothing cuts it short (and that it ends
    exactly as ``version`` plus the ``kept`` documents)."""
    store = _spied_store(path, settings, pid, before, None)
    try:
        _add(store, version)
        _exactly(store, {**version, **kept})
        return store.sent
    finally:
        store.close()


def _spied_store(path, settings: IndexSettings, frozen_pid: int, version: dict[str, list[Passage]], k: int | None):
    """A store holding ``version``, whose ``k``-th write request (from now on) meets a frozen server: the server's
    process is stopped (SIGSTOP, thawed by the test) just before that request goes to it. ``store.sent`` counts the
    write requests (insert, upsert, delete)."""
    from qrank.index import milvus_store

    store = milvus_store.MilvusStore(path, path.name, 8, settings)
    _add(store, version)
    store.sent = 0

    def spy(write):
        def call(*args, **kwargs):
            store.sent += 1
            if store.sent == k:
                os.kill(frozen_pid, signal.SIGSTOP)
            return write(*args, **kwargs)
        return call

    for name in ("insert", "upsert", "delete"):
        setattr(store.client, name, spy(getattr(store.client, name)))
    return store


def _cut_short(store, milvus_process, write, again: str) -> None:
    """Run ``write``, which the spy cuts short: it fails saying so, and the generation moves on."""
    generation = store.generation()
    try:
        with pytest.raises(StoreUnavailable) as e:
            write()
    finally:
        os.kill(milvus_process.proc.pid, signal.SIGCONT)
    assert f"cannot be reached (no answer within 1 s; the write may be incomplete: {again} completes it)" \
        in str(e.value)
    assert store.generation() > generation  # derived indexes (BM25) do not trust what they read before
    time.sleep(0.2)  # the frozen request may still be carried out once thawed: either way is fine


def _never_done_silently(store, version: dict[str, list[Passage]], ids) -> dict[str, list[tuple]]:
    """After a write cut short: no passage lies beyond its document's reach, and a document of ``version`` whose
    hash reads as that version's holds all of it (else the next add would skip it as unchanged and leave it so)."""
    seen, hashes = _seen(store, ids), store.hashes(ids)
    assert store.count_passages() == sum(map(len, seen.values())), seen
    for d, ps in version.items():
        if hashes.get(d) == ps[0].hash:  # reads as done: then it is done
            assert seen[d] == [(p.chunk, p.text, p.hash) for p in ps], (d, seen)
    return seen


def test_a_write_cut_short_is_never_half_done_silently_and_running_it_again_completes_it(
    tmp_path, milvus_process, monkeypatch
):
    """An add cut short at each of its requests in turn: the server is frozen just before that request is sent (a
    spy on the client's write methods: the request itself goes to the real, frozen server and meets its deadline).
    Every document then reads either as fully new or as not new (its hash is not the new one, so the next add does
    not skip it), no passage lies beyond its document's reach, and adding again completes it: the same add, or
    another version of the documents. Batches of two rows, so that documents straddle requests."""
    from qrank.index import milvus_store

    monkeypatch.setattr(milvus_store, "_INSERT_ROWS", 2)
    settings = IndexSettings(milvus_uri=milvus_process.uri, milvus_request_timeout_s=1.0)
    before = _version("a", {"grows": 1, "shrinks": 3, "kept": 2})
    # a known document that grows, one that shrinks, a new one of several passages, a new one of one passage
    cut = _version("b", {"grows": 3, "shrinks": 1, "fresh": 3, "single": 1})
    other = _version("c", {"grows": 2, "shrinks": 2, "fresh": 1, "single": 2})
    everything = ["grows", "shrinks", "kept", "fresh", "single"]
    pid = milvus_process.proc.pid

    requests = _requests_of_a_whole_add(tmp_path / "cutnone", settings, pid, before, cut, {"kept": before["kept"]})
    assert requests == 8, requests  # pending first rows (2), the surplus (1), the others (2), the first rows (3)
    for k in range(1, requests + 1):
        store = _spied_store(tmp_path / f"cut{k}", settings, pid, before, k)
        try:
            _cut_short(store, milvus_process, lambda: _add(store, cut), "adding the same documents again")
            seen = _never_done_silently(store, cut, everything)
            assert seen["kept"] == [(p.chunk, p.text, p.hash) for p in before["kept"]]
            if k % 2:  # another version, shorter where the cut one was longer: nothing of the cut one stays
                _add(store, other)
                _exactly(store, {**other, "kept": before["kept"]})
            for _ in range(1 if k < requests else 2):  # the same add again (twice: the same result)
                _add(store, cut)
                _exactly(store, {**cut, "kept": before["kept"]})
        finally:
            store.close()


def test_a_delete_cut_short_leaves_no_document_that_an_add_would_skip(tmp_path, milvus_process, monkeypatch):
    """A delete cut short at each of its requests in turn (as above): a document it did not finish still has its first
    row, which reads "pending" unless the document is whole, so adding the same documents again, as ``qrank index
    add`` does (skipping those whose hash is unchanged), leaves every one of them complete; deleting them again
    finishes the delete."""
    from qrank.index import milvus_store

    monkeypatch.setattr(milvus_store, "_INSERT_ROWS", 2)
    settings = IndexSettings(milvus_uri=milvus_process.uri, milvus_request_timeout_s=1.0)
    before = _version("a", {"one": 1, "two": 2, "three": 3, "four": 4, "kept": 2})
    gone = ["one", "two", "three", "four"]
    pid = milvus_process.proc.pid

    store = _spied_store(tmp_path / "delnone", settings, pid, before, None)
    assert store.delete(gone) == 4
    _exactly(store, {"kept": before["kept"]})
    requests = store.sent
    store.close()
    assert requests == 4, requests  # pending first rows (2), the other rows (1), the first rows (1)
    for k in range(1, requests + 1):
        store = _spied_store(tmp_path / f"del{k}", settings, pid, before, k)
        try:
            _cut_short(store, milvus_process, lambda: store.delete(gone), "deleting the same documents again")
            seen = _never_done_silently(store, before, list(before))
            assert seen["kept"] == [(p.chunk, p.text, p.hash) for p in before["kept"]]
            if k % 2:  # the same delete again finishes it
                store.delete(gone)
                _exactly(store, {"kept": before["kept"]})
            _readd(store, before)  # skips only documents left whole (see _never_done_silently)
            _exactly(store, before)
        finally:
            store.close()


def test_a_shrinking_add_cut_short_then_the_old_version_added_again_is_complete(tmp_path, milvus_process,
                                                                                 monkeypatch):
    """An add that replaces known documents with shorter (or other) versions, cut short at each of its requests in
    turn (as above), then the OLD version added again as ``qrank index add`` does (skipping documents whose hash is
    unchanged): every document ends as the old version, whole. A document whose first row still showed the old hash
    while its surplus passages were gone would be skipped, and stay short of passages for good."""
    from qrank.index import milvus_store

    monkeypatch.setattr(milvus_store, "_INSERT_ROWS", 2)
    settings = IndexSettings(milvus_uri=milvus_process.uri, milvus_request_timeout_s=1.0)
    old = _version("a", {"shrinks": 3, "long": 4, "other": 3, "single": 1})
    old["kept"] = _version("a", {"kept": 2})["kept"]
    # shorter versions, one as long but another text, a single passage rewritten, one document unchanged
    new = {**_version("b", {"shrinks": 1, "long": 2, "other": 3, "single": 1}), "kept": old["kept"]}
    pid = milvus_process.proc.pid

    requests = _requests_of_a_whole_add(tmp_path / "shrinknone", settings, pid, old, new, {})
    assert requests == 8, requests  # pending first rows (2), the surplus (1), the others (2), the first rows (3)
    for k in range(1, requests + 1):
        store = _spied_store(tmp_path / f"shrink{k}", settings, pid, old, k)
        try:
            _cut_short(store, milvus_process, lambda: _add(store, new), "adding the same documents again")
            _never_done_silently(store, old, list(old))
            _never_done_silently(store, new, list(new))
            _readd(store, old)
            _exactly(store, old)
            assert _readd(store, new) == ["kept"]  # and on to the new version: only the unchanged one is skipped
            _exactly(store, new)
        finally:
            store.close()


class _Late(grpc.RpcError):
    """What gRPC raises when a request's deadline passes without an answer."""

    def code(self):
        return grpc.StatusCode.DEADLINE_EXCEEDED


def test_a_delete_whose_last_request_fails_then_an_add_of_the_same_documents_restores_them_whole(tmp_path,
                                                                                                  monkeypatch):
    """The reviewer's case, through the pipeline on Milvus Lite: the delete's second request (its documents' other
    passages are gone by then) fails with DEADLINE_EXCEEDED. Adding the same documents again must not report them
    unchanged: each is back with all its passages, which together give its whole text."""
    text = {f"d{i}": " ".join(f"word{i}x{j}" for j in range(40)) for i in range(3)}
    docs = [{"id": d, "text": t} for d, t in text.items()]
    settings = Settings(home=tmp_path / "home", cache={"enabled": False},
                        index={"chunk_tokens": 16, "chunk_overlap": 3})
    with Pipeline.open("docs", embedder=Embedder(BowModel()), settings=settings, backend="milvus") as p:
        assert p.add(docs, progress=False)["added"] == 3
        store = p.collection.store
        whole = _seen(store, list(text))
        assert all(len(ps) > 2 for ps in whole.values()), whole  # several passages each

        def whole_text(d: str) -> str:
            out = ""
            for ps in store.get([d])[d]:
                out = out[: ps.start] + ps.text
            return out

        assert all(whole_text(d) == t for d, t in text.items())
        delete, calls = store.client.delete, []

        def failing_delete(*args, **kwargs):
            calls.append(kwargs.get("ids"))
            if len(calls) == 2:
                raise _Late()
            return delete(*args, **kwargs)

        monkeypatch.setattr(store.client, "delete", failing_delete)
        with pytest.raises(StoreUnavailable, match="deleting the same documents again completes it"):
            p.delete(list(text))
        monkeypatch.setattr(store.client, "delete", delete)
        assert len(calls) == 2 and len(store.get(list(text))) == 3  # each document is left with its first passage
        report = p.add(docs, progress=False)
        assert (report["unchanged"], report["replaced"], report["count"]) == (0, 3, 3), report
        assert _seen(store, list(text)) == whole
        assert all(whole_text(d) == t for d, t in text.items())
        assert store.count_passages() == sum(map(len, whole.values()))

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
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("pymilvus").addHandler(handler)
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
            assert listed["remote"]["status"] == "unavailable" and "connection refused" in listed["remote"]["reason"]
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
        logging.getLogger("pymilvus").removeHandler(handler)
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
    records: list[logging.LogRecord] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = records.append
    logging.getLogger("pymilvus").addHandler(handler)
    try:
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

    def store_with_spy(k: int | None):
        """A store holding ``before``, whose ``k``-th write request (from now on) meets a frozen server."""
        store = milvus_store.MilvusStore(tmp_path / f"c{k}", f"cut{k}", 8, settings)
        _add(store, before)
        store.sent = 0

        def spy(write):
            def call(*args, **kwargs):
                store.sent += 1
                if store.sent == k:
                    os.kill(milvus_process.proc.pid, signal.SIGSTOP)  # thawed by the test
                return write(*args, **kwargs)
            return call

        for name in ("insert", "upsert", "delete"):
            setattr(store.client, name, spy(getattr(store.client, name)))
        return store

    store = store_with_spy(None)
    _add(store, cut)
    _exactly(store, {**cut, "kept": before["kept"]})
    requests = store.sent
    store.close()
    assert requests == 8, requests  # pending first rows (2), the surplus (1), the others (2), the first rows (3)
    for k in range(1, requests + 1):
        store = store_with_spy(k)
        try:
            generation = store.generation()
            try:
                with pytest.raises(StoreUnavailable) as e:
                    _add(store, cut)
            finally:
                os.kill(milvus_process.proc.pid, signal.SIGCONT)
            assert ("cannot be reached (no answer within 1 s; the write may be incomplete: adding the same documents "
                    "again completes it)") in str(e.value)
            assert store.generation() > generation  # derived indexes (BM25) do not trust what they read before
            time.sleep(0.2)  # the frozen request may still be carried out once thawed: either way is fine
            seen, hashes = _seen(store, everything), store.hashes(everything)
            assert store.count_passages() == sum(map(len, seen.values())), (k, seen)
            for d, ps in cut.items():
                if hashes.get(d) == ps[0].hash:  # reads as done: then it is done
                    assert seen[d] == [(p.chunk, p.text, p.hash) for p in ps], (k, d, seen)
            assert seen["kept"] == [(p.chunk, p.text, p.hash) for p in before["kept"]]
            if k % 2:  # another version, shorter where the cut one was longer: nothing of the cut one stays
                _add(store, other)
                _exactly(store, {**other, "kept": before["kept"]})
            for _ in range(1 if k < requests else 2):  # the same add again (twice: the same result)
                _add(store, cut)
                _exactly(store, {**cut, "kept": before["kept"]})
        finally:
            store.close()

"""RemoteReranker / RemoteEmbedder against a live qrank server: same answers and errors as the local
facades, clear errors when the server is down, overloaded or refuses the key."""

from __future__ import annotations

import threading

import httpx
import numpy as np
import pytest
from _server_support import GatedScorer, as_reranker, live_server, queue_depth, server_settings, wait_until

from qrank import InvalidInput, ModelNotFound, Overloaded, QrankError, RemoteEmbedder, RemoteReranker, TooLarge
from qrank.models.remote import ServerUnavailable
from qrank.server.run import free_port

QUERY = "how do statins lower cholesterol?"
DOCS = [
    "Statins inhibit HMG-CoA reductase in the liver.",
    "The Eiffel tower is in Paris.",
    "LDL falls with statin therapy.",
]


@pytest.fixture(scope="module")
def url(ce, minilm, qwen3_reranker):
    settings = server_settings(api_key="k3y", max_documents=10)
    with live_server(settings, rerankers={"ce": ce, "tiny": qwen3_reranker}, embedders={"minilm": minilm}) as u:
        yield u


def test_remote_reranker_matches_local(url, ce, qwen3_reranker):
    with RemoteReranker(url, api_key="k3y") as rr:
        assert rr.info.id == "ce" and rr.info.kind == "cross-encoder" and rr.info.max_length == ce.info.max_length
        assert rr.score(QUERY, DOCS) == pytest.approx(ce.score(QUERY, DOCS), abs=2e-5)
        local = ce.rerank(QUERY, DOCS, top_n=2)
        remote = rr.rerank(QUERY, DOCS, top_n=2)
        assert [(r.index, r.document) for r in remote] == [(r.index, r.document) for r in local]
        assert [r.score for r in remote] == pytest.approx([r.score for r in local], abs=2e-5)
        assert all(r.document is None for r in rr.rerank(QUERY, DOCS, return_documents=False))
        batch = rr.batch_rerank([QUERY, "paris landmarks"], [DOCS, DOCS[:2]], top_n=1)
        assert [b[0].index for b in batch] == [
            b[0].index for b in ce.batch_rerank([QUERY, "paris landmarks"], [DOCS, DOCS[:2]], top_n=1)
        ]
    instruction = "Judge medical relevance"
    with RemoteReranker(url, model="tiny", api_key="k3y") as tiny:
        assert tiny.score(QUERY, DOCS, instruction=instruction) == pytest.approx(
            qwen3_reranker.score(QUERY, DOCS, instruction=instruction), abs=2e-5
        )


def test_a_list_of_urls_balances(url, ce):
    with RemoteReranker([url, url], model="ce", api_key="k3y") as rr:
        assert rr.score(QUERY, DOCS) == pytest.approx(ce.score(QUERY, DOCS), abs=2e-5)
        assert rr.transport.base_url == f"{url},{url}"


def test_tei_protocol(url, ce):
    """The TEI client path against the server's TEI routes (``/info``, ``/rerank`` with ``texts``)."""
    with RemoteReranker(url, model="ce", api_key="k3y", protocol="tei") as rr:
        assert rr.info.id == "ce" and rr.info.max_length == ce.info.max_length and rr.info.kind == "cross-encoder"
        assert rr.score(QUERY, DOCS) == pytest.approx(ce.score(QUERY, DOCS), abs=2e-5)
        local, remote = ce.rerank(QUERY, DOCS, top_n=2), rr.rerank(QUERY, DOCS, top_n=2)
        assert [(r.index, r.document) for r in remote] == [(r.index, r.document) for r in local]
        assert [r.score for r in remote] == pytest.approx([r.score for r in local], abs=2e-5)
        with pytest.raises(InvalidInput) as err:
            rr.score(QUERY, DOCS, instruction="judge")
        assert err.value.field == "instruction"
    with RemoteReranker(url, api_key="k3y", protocol="tei") as rr:  # TEI's /info without a model: the default
        assert rr.info.id == "ce"
    info = httpx.get(url + "/info", params={"model": "minilm"}, headers={"authorization": "Bearer k3y"}).json()
    # TEI names the pooling (all-MiniLM-L6-v2 averages its tokens); it said the model kind until 2026-12-07
    assert info["model_type"] == {"embedding": {"pooling": "mean"}} and info["max_input_length"] > 0
    missing = httpx.get(url + "/info", params={"model": "nope"}, headers={"authorization": "Bearer k3y"})
    assert missing.status_code == 404 and missing.json()["error"]["field"] == "model"
    with pytest.raises(InvalidInput) as err:
        RemoteReranker(url, protocol="grpc")
    assert err.value.field == "protocol"


def test_remote_embedder_matches_local(url, minilm):
    with RemoteEmbedder(url, model="minilm", api_key="k3y") as em:
        assert em.dim == minilm.dim
        np.testing.assert_allclose(em.embed(DOCS), minilm.embed(DOCS), atol=2e-5)
        one = em.embed("a single query", is_query=True, dim=minilm.dim)  # the full width is always accepted
        assert one.shape == (minilm.dim,)
        np.testing.assert_allclose(one, minilm.embed("a single query", is_query=True), atol=2e-5)
        assert em.info.supports_dims is False  # MiniLM was not trained to be cut: the server refuses a prefix
        with pytest.raises(InvalidInput) as err:
            em.embed("a single query", dim=128)
        assert err.value.field == "dimensions" and "not a Matryoshka model" in str(err.value)
        with pytest.raises(InvalidInput) as err:
            em.embed(["ok", " "])
        assert err.value.field == "texts[1]"
        np.testing.assert_allclose(em.embed_documents(DOCS[:1]), minilm.embed_documents(DOCS[:1]), atol=2e-5)


def test_remote_errors_match_local_ones(url):
    rr = RemoteReranker(url, api_key="k3y")
    with pytest.raises(InvalidInput) as err:  # checked before sending, like the local facade
        rr.rerank("", DOCS)
    assert err.value.field == "query"
    with pytest.raises(InvalidInput) as err:
        rr.score(QUERY, ["ok", None])
    assert err.value.field == "documents[1]"
    with pytest.raises(TooLarge):  # the server's limit, relayed
        rr.score(QUERY, ["d"] * 11)
    with pytest.raises(ModelNotFound):
        RemoteReranker(url, model="nope", api_key="k3y").score(QUERY, DOCS)
    with pytest.raises(InvalidInput) as err:  # the server's field, relayed
        RemoteEmbedder(url, api_key="k3y").embed("x", dim=100_000)
    assert err.value.field == "dimensions"
    with pytest.raises(QrankError) as err:
        RemoteReranker(url, api_key="wrong").score(QUERY, DOCS)
    assert "401" in str(err.value) and err.value.field == "api_key"


def test_server_down_is_a_clear_error():
    port = free_port()
    rr = RemoteReranker(f"http://127.0.0.1:{port}", timeout=2)
    with pytest.raises(ServerUnavailable) as err:
        rr.score(QUERY, DOCS)
    assert f"127.0.0.1:{port}" in str(err.value) and "is it running" in str(err.value)
    with pytest.raises(InvalidInput):
        RemoteReranker("localhost:8000")


def test_overloaded_and_timeout():
    model = GatedScorer()
    with (
        live_server(server_settings(max_queue=1, max_wait_ms=0), rerankers={"gated": as_reranker(model)}) as url,
        httpx.Client(base_url=url) as probe,
    ):
        rr = RemoteReranker(url, timeout=30)
        model.gate.clear()
        model.entered.clear()
        busy = threading.Thread(target=rr.score, args=("a", ["a"]))
        busy.start()
        assert model.entered.wait(10)
        queued = threading.Thread(target=rr.score, args=("b", ["b"]))
        queued.start()
        wait_until(lambda: queue_depth(probe, "gated") == 1)
        with pytest.raises(Overloaded) as err:
            rr.score("c", ["c"])
        assert err.value.retry_after >= 1 and "429" in str(err.value)
        model.gate.set()
        busy.join(10)
        queued.join(10)
        model.gate.clear()  # a busy model and an impatient client: a timeout, named as such
        with pytest.raises(ServerUnavailable) as err:
            RemoteReranker(url, timeout=0.3).score("d", ["d"])
        assert "timed out" in str(err.value)
        model.gate.set()


LONG = "".join(f"Sentence {i} is about dogs and parks. " if i != 170 else "Statins lower LDL cholesterol in the liver. "
               for i in range(300))


@pytest.mark.parametrize("protocol", ["v1", "tei"])
def test_long_document_policy_is_forwarded(url, ce, protocol):
    """The server applies the caller's policy and parameters: each result (score, span, chunks, tokens,
    truncated) equals the local facade's under the same policy."""
    from qrank.long_documents import LongDocuments

    docs = [DOCS[0], LONG]
    policies = [LongDocuments(policy="chunk", chunk_tokens=128, chunk_overlap=16, aggregate="mean_top_k", top_k=2),
                LongDocuments(policy="chunk"), LongDocuments(), LongDocuments(max_tokens_per_doc=50)]
    with RemoteReranker(url, model="ce", api_key="k3y", protocol=protocol) as rr:
        for policy in policies:
            local = {r.index: r for r in ce.rerank(QUERY, docs, long_documents=policy)}
            remote = {r.index: r for r in rr.rerank(QUERY, docs, long_documents=policy)}
            for i, want in local.items():
                got = remote[i]
                assert got.score == pytest.approx(want.score, abs=2e-5), policy
                assert (got.span, got.chunks, got.tokens, got.truncated) == (
                    want.span, want.chunks, want.tokens, want.truncated), policy
        assert remote[1].truncated and remote[1].tokens == 50  # the cap reached the server
        with pytest.raises((InvalidInput, TooLarge)) as err:
            rr.score(QUERY, docs, long_documents="error")
        assert ("texts[1]" if protocol == "tei" else "documents[1]") in str(err.value)  # the field as sent
    # a reranker built with a policy sends it on every call
    with RemoteReranker(url, model="ce", api_key="k3y", protocol=protocol, long_documents="chunk") as rr:
        got = rr.rerank(QUERY, [LONG])[0]
        want = ce.rerank(QUERY, [LONG], long_documents="chunk")[0]
        assert got.chunks == want.chunks > 1 and got.span == want.span

"""The fast engine (packed passes, shared prefixes, last-row-only last layer) equals the reference paths.

Runs on the CPU in float32 with tiny random Qwen3 models: scores are compared with the model cards'
recipes (tests/numerics/official_recipes.py, no qrank inside), with the reference engine, and with
the fast engine itself under other prefix-sharing and batch-split settings.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from official_recipes import official_qwen3_embed, official_qwen3_rerank

QUERIES = ["What is the capital of China?", "万有引力是什么？", "how do vaccines train the immune system"]
DOCS = [
    "The capital of China is Beijing.",
    "Gravity is a force that attracts two bodies towards each other. It gives weight to physical objects "
    "and is responsible for the movement of planets around the sun.",
    "北京是中华人民共和国的首都，也是全国的政治和文化中心。",
    "short",
    "The immune system learns from a harmless piece of a pathogen. " * 6,
    "万有引力是两个物体之间相互吸引的力。",
    "The",  # starts like other documents: the shared prefix must stop at the query
]
PAIRS = [(q, d) for q in QUERIES for d in DOCS]


def _reranker(path, **engine):
    from qrank import Reranker, Settings

    settings = Settings(engine={"engine": "fast", **engine})
    return Reranker.from_pretrained(str(path), settings=settings, device="cpu", dtype="float32")


def _with_engine(rr, **kwargs):
    """The same loaded backend behind another fast engine (loading the tokenizer again is slow)."""
    import copy

    from qrank import Reranker
    from qrank.engine.fast import FastEngine

    backend = copy.copy(rr.model)
    backend.engine = FastEngine(rr.model.model.base_model, pad_id=0, **kwargs)
    return Reranker(backend)


@pytest.fixture(scope="module")
def fast(qwen3_reranker_dir):
    rr = _reranker(qwen3_reranker_dir)
    assert rr.model.engine.name == "fast"
    return rr


@pytest.fixture(scope="module")
def official(qwen3_reranker_dir):
    return np.asarray(official_qwen3_rerank(str(qwen3_reranker_dir), PAIRS), dtype=np.float32)


def test_scores_equal_the_official_recipe(fast, official):
    got = fast.model.score_pairs(PAIRS)
    np.testing.assert_allclose(got, official, atol=1e-4)
    assert np.ptp(official) > 1e-3  # the tiny random model does tell the pairs apart


def test_scores_equal_the_reference_engine(fast, qwen3_reranker):
    assert qwen3_reranker.model.engine.name == "reference"
    np.testing.assert_allclose(fast.model.score_pairs(PAIRS), qwen3_reranker.model.score_pairs(PAIRS), atol=1e-4)


def test_the_query_prefix_is_computed_once_per_query(fast):
    seqs = fast.model.encode(PAIRS)
    groups = fast.model.engine.groups(seqs)
    by_query = sorted(sorted(g.members) for g in groups if g.prefix_len)
    assert by_query == [list(range(i * len(DOCS), (i + 1) * len(DOCS))) for i in range(len(QUERIES))]
    for g in groups:
        first = seqs[g.members[0]][: g.prefix_len]
        assert all(seqs[m][: g.prefix_len] == first for m in g.members)
    total = sum(len(s) for s in seqs)
    saved = sum((len(g.members) - 1) * g.prefix_len for g in groups)
    assert fast.model.engine.computed_tokens(seqs) == total - saved
    assert saved > total / 4  # the template + instruction + query is most of these short pairs


def test_prefix_sharing_on_equals_off(fast, qwen3_reranker_dir):
    off = _reranker(qwen3_reranker_dir, prefix_sharing=False)  # through Settings, once
    seqs = off.model.encode(PAIRS)
    assert off.model.engine.computed_tokens(seqs) == sum(len(s) for s in seqs)
    np.testing.assert_allclose(fast.model.score_pairs(PAIRS), off.model.score_pairs(PAIRS), atol=1e-5)


@pytest.mark.parametrize("max_batch_tokens, max_batch_size", [(64, 256), (150, 3), (100_000, 5)])
def test_any_batch_split_equals_one_batch(fast, max_batch_tokens, max_batch_size):
    split = _with_engine(fast, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size)
    np.testing.assert_allclose(split.model.score_pairs(PAIRS), fast.model.score_pairs(PAIRS), atol=1e-5)


def test_order_is_restored(fast):
    rng = np.random.default_rng(0)
    perm = rng.permutation(len(PAIRS))
    base = fast.model.score_pairs(PAIRS)
    shuffled = fast.model.score_pairs([PAIRS[i] for i in perm])
    np.testing.assert_allclose(shuffled, base[perm], atol=1e-5)


def test_batch_rerank_equals_reference(fast, qwen3_reranker):
    docs_list = [DOCS, DOCS[2:], DOCS[:3]]
    got = fast.batch_rerank(QUERIES, docs_list, top_n=3)
    ref = qwen3_reranker.batch_rerank(QUERIES, docs_list, top_n=3)
    for a, b in zip(got, ref):
        assert [r.index for r in a] == [r.index for r in b]
        np.testing.assert_allclose([r.score for r in a], [r.score for r in b], atol=1e-4)


def test_sequence_classifier_checkpoint(qwen3_seq_cls_dir, official):
    seq = _reranker(qwen3_seq_cls_dir)
    assert seq.model.engine.name == "fast"
    np.testing.assert_allclose(seq.model.score_pairs(PAIRS), official, atol=1e-4)


def test_embedder_equals_the_official_recipe(qwen3_embedder_dir):
    from qrank import Embedder, Settings

    em = Embedder.from_pretrained(
        str(qwen3_embedder_dir), settings=Settings(engine={"engine": "fast"}), device="cpu", dtype="float32"
    )
    assert em.model.engine.name == "fast"
    for is_query, texts in ((True, QUERIES), (False, DOCS)):
        got = em.embed(texts, is_query=is_query)
        ref = official_qwen3_embed(str(qwen3_embedder_dir), texts, is_query=is_query)
        np.testing.assert_allclose(got, ref, atol=1e-4)


def _engines(model_dir):
    from transformers import AutoModelForCausalLM

    from qrank.engine.fast import FastEngine
    from qrank.engine.reference import ReferenceEngine

    body = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval().model
    return body, ReferenceEngine(body, pad_id=0), FastEngine


def test_engine_on_awkward_token_sequences(qwen3_reranker_dir):
    """Nested prefixes, duplicates, one-token sequences and several prefix groups in one pass."""
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    rng = np.random.default_rng(1)
    tok = lambda n: rng.integers(0, 5000, n).tolist()  # noqa: E731
    a, b = tok(30), tok(12)
    seqs = [a + tok(5), a + tok(40), a, a[:20], a + tok(5), tok(1), [7], b + tok(3), b + tok(9), b + tok(9), tok(50)]
    seqs.append(list(seqs[1]))  # an exact duplicate
    expected = ref.last_hidden(seqs)
    for kwargs in ({}, {"max_batch_tokens": 40}, {"max_batch_size": 2}, {"prefix_sharing": False}, {"fuse_projections": True}):
        engine = FastEngine(body, pad_id=0, **kwargs)
        torch.testing.assert_close(engine.last_hidden(seqs), expected, atol=1e-4, rtol=0)
    engine = FastEngine(body, pad_id=0)
    assert engine.computed_tokens(seqs) < sum(map(len, seqs))


def test_engine_rejects_empty_sequences_and_non_qwen3_bodies(qwen3_reranker_dir, random_ce_dir):
    from transformers import AutoModel

    from qrank import InvalidInput, UnsupportedModel

    body, _, FastEngine = _engines(qwen3_reranker_dir)
    with pytest.raises(InvalidInput) as err:
        FastEngine(body, pad_id=0).last_hidden([[1, 2], []])
    assert err.value.field == "sequences"
    assert FastEngine(body, pad_id=0).last_hidden([]).shape == (0, body.config.hidden_size)
    bert = AutoModel.from_pretrained(str(random_ce_dir))
    with pytest.raises(UnsupportedModel):
        FastEngine(bert, pad_id=0)
    with pytest.raises(ValueError):
        FastEngine(body, pad_id=0, attention="flash")
    with pytest.raises(ValueError):
        FastEngine(body, pad_id=0, cuda_graphs="yes")


def test_varlen_rows_and_cuda_graph_padding(qwen3_reranker_dir):
    """The varlen plan (keys gathered as prefix + own) and the padded static shapes CUDA graphs replay.

    On the CPU the varlen kernel is replaced by a row-by-row stand-in and the static-shape forward runs
    without capturing a graph; what is checked is the packing and padding around them.
    """
    from qrank.engine.graphs import GraphRunner, static_inputs
    from qrank.engine.packing import build_layout, plan_passes

    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    rng = np.random.default_rng(2)
    prefix = rng.integers(0, 5000, 25).tolist()
    seqs = [prefix + rng.integers(0, 5000, int(n)).tolist() for n in rng.integers(1, 60, 9)]
    seqs += [rng.integers(0, 5000, int(n)).tolist() for n in (1, 33)]
    expected = ref.last_hidden(seqs)
    engine = FastEngine(body, pad_id=0, attention="varlen", max_batch_tokens=200)
    torch.testing.assert_close(engine.last_hidden(seqs), expected, atol=1e-4, rtol=0)
    runner = GraphRunner(engine.stack, capture=False)
    lengths = [len(s) for s in seqs]
    for plan in plan_passes(engine.groups(seqs), lengths, 200, 256):
        layout = build_layout(seqs, plan)
        shape, _ = static_inputs(layout)
        assert shape.tokens > layout.num_tokens or shape.tokens == 256  # really padded
        with torch.inference_mode():
            got = runner.run(layout)
        torch.testing.assert_close(got, expected[layout.members], atol=1e-4, rtol=0)


@pytest.mark.parametrize("chunk_tokens, first_tokens", [(64, 16), (200, None), (10_000, 40)])
def test_chunked_tokenizing_equals_one_batch(fast, chunk_tokens, first_tokens):
    """The GPU path's overlap (tokenize chunk k+1 while chunk k runs), forced on the CPU: same scores,
    same order, every pair encoded exactly once, chunks that grow from small to the budget."""
    from qrank.engine import pipelined_last_hidden

    model = fast.model
    chunks = []

    def encode(chunk):
        chunks.append(list(chunk))
        return model.encode(chunk)

    hidden = pipelined_last_hidden(model.engine, PAIRS, encode, chunk_tokens=chunk_tokens, first_tokens=first_tokens,
                                   overlap=True)
    scores = torch.sigmoid(hidden @ model.head).numpy()
    np.testing.assert_allclose(scores, model.score_pairs(PAIRS), atol=1e-5)
    assert [p for c in chunks for p in c] == PAIRS
    sizes = [len(c) for c in chunks]
    assert len(chunks) >= 2 and sizes[0] < max(sizes)  # a small first chunk starts the GPU early


def test_chunk_sizer_learns_the_characters_per_token():
    from qrank.engine.pipelining import ChunkSizer

    sizer = ChunkSizer(target_tokens=10_000, first_tokens=1000, growth=4.0, fill=1.0)
    sizes = [100] * 1000
    end = sizer.next_end(sizes, 0)
    assert end == 40  # 1000 tokens at the initial 4 chars/token
    sizer.observe(chars=4000, tokens=2000)  # this text costs 2 chars a token (say, a shared prefix that is not)
    end2 = sizer.next_end(sizes, end)
    assert end2 - end == 80  # 4000 tokens (grown 4x) at 2 chars/token
    assert sizer.next_end(sizes, end2) - end2 == 200  # capped at the 10,000-token target
    assert sizer.next_end([10**9, 1], 0) == 1  # one item over the limit still makes a chunk
    with pytest.raises(ValueError):
        ChunkSizer(target_tokens=0)


@pytest.mark.parametrize("size, small", [("0.6b", True), ("4b", False), ("8b", False)])
def test_model_size_decides_graphs_and_first_chunk(shared, size, small):
    """The published shapes (weights on the meta device, nothing allocated): FLOPs per token from the config's
    formula, and the size rule that picks CUDA graphs and the small first chunk for the 0.6B shape only."""
    import json

    from transformers import Qwen3Config, Qwen3Model

    from qrank.engine.fast import FastEngine

    raw = json.loads((shared / "configs" / f"qwen3-reranker-{size}.json").read_text())
    for key in ("architectures", "torch_dtype", "dtype"):
        raw.pop(key, None)
    cfg = Qwen3Config(**raw)
    with torch.device("meta"):
        body = Qwen3Model(cfg)
    engine = FastEngine(body, pad_id=0)
    h, q, kv, f = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim, cfg.intermediate_size
    assert engine.stack.flops_per_token == 2 * cfg.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * f)
    assert engine.small is small
    assert engine.first_chunk_tokens == (None if small else engine.max_batch_tokens)
    assert not engine.cuda_graphs  # never off CUDA

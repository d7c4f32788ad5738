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
    backend.engine = FastEngine(rr.model.model.base_model, **kwargs)
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
    for kwargs in ({}, {"max_batch_tokens": 40}, {"max_batch_size": 2}, {"prefix_sharing": False}):
        engine = FastEngine(body, **kwargs)
        torch.testing.assert_close(engine.last_hidden(seqs), expected, atol=1e-4, rtol=0)
    engine = FastEngine(body)
    assert engine.computed_tokens(seqs) < sum(map(len, seqs))


def test_engine_rejects_empty_sequences_and_non_qwen3_bodies(qwen3_reranker_dir, random_ce_dir):
    from transformers import AutoModel

    from qrank import InvalidInput, UnsupportedModel

    body, _, FastEngine = _engines(qwen3_reranker_dir)
    with pytest.raises(InvalidInput) as err:
        FastEngine(body).last_hidden([[1, 2], []])
    assert err.value.field == "sequences"
    assert FastEngine(body).last_hidden([]).shape == (0, body.config.hidden_size)
    bert = AutoModel.from_pretrained(str(random_ce_dir))
    with pytest.raises(UnsupportedModel):
        FastEngine(bert)
    with pytest.raises(ValueError):
        FastEngine(body, attention="flash")
    with pytest.raises(ValueError):
        FastEngine(body, cuda_graphs="yes")


def test_varlen_rows_and_cuda_graph_padding(qwen3_reranker_dir, monkeypatch):
    """The varlen plan (keys gathered as prefix + own) and the padded static shapes CUDA graphs replay.

    On the CPU the FlashAttention kernel is replaced by a row-by-row reference of its semantics
    (tests/numerics/attention_reference.py) and the static-shape forward a graph records runs without
    capturing; what is checked is the packing and padding around the kernel.
    """
    from attention_reference import varlen_reference

    from qrank.engine import attention
    from qrank.engine.graphs import GraphRunner
    from qrank.engine.packing import build_layout, plan_passes

    monkeypatch.setattr(attention, "_flash_varlen", varlen_reference)
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    stack = FastEngine(body).stack
    rng = np.random.default_rng(2)
    prefix = rng.integers(0, 5000, 25).tolist()
    seqs = [prefix + rng.integers(0, 5000, int(n)).tolist() for n in rng.integers(1, 60, 9)]
    seqs += [rng.integers(0, 5000, int(n)).tolist() for n in (1, 33)]
    expected = ref.last_hidden(seqs)
    runner = GraphRunner(stack, attention="varlen")
    passes = plan_passes(FastEngine(body).groups(seqs), [len(s) for s in seqs], 200, 256)
    assert len(passes) > 1
    with torch.inference_mode():
        for plan in passes:
            layout = build_layout(seqs, plan)
            ids, pos, last = (torch.from_numpy(a) for a in (layout.input_ids, layout.positions, layout.last_index))
            got = stack.forward(ids, pos, attention.VarlenAttention.for_layout(layout, "cpu", stack.scale), last)
            torch.testing.assert_close(got, expected[layout.members], atol=1e-4, rtol=0)
            shape, host = runner.inputs(layout)
            assert shape.tokens > layout.num_tokens or shape.tokens == 256  # really padded
            padded = runner.forward_static(torch.from_numpy(host), shape)[: len(layout.members)]
            torch.testing.assert_close(padded, expected[layout.members], atol=1e-4, rtol=0)


class _Recording:
    """The engine as it is, recording each chunk ``pipelined_last_hidden`` submits."""

    def __init__(self, engine) -> None:
        self.engine, self.chunks = engine, []

    def __getattr__(self, name):
        return getattr(self.engine, name)

    def submit(self, seqs):
        self.chunks.append(list(seqs))
        return self.engine.submit(seqs)


@pytest.mark.parametrize("chunk_tokens, first_tokens", [(64, 16), (200, None), (10_000, 40)])
def test_chunked_tokenizing_equals_one_batch(fast, chunk_tokens, first_tokens):
    # (64, 16): chunks of about one pair; (10_000, 40): chunks that grow from one pair to many
    """The GPU path's overlap (tokenize chunk k+1 while chunk k runs), forced on the CPU: same scores,
    same order, every pair encoded exactly once, and chunks cut on exact computed token counts: each chunk
    is the longest run within its size (first_tokens, doubling up to chunk_tokens)."""
    from qrank.engine import pipelined_last_hidden
    from qrank.engine.pipelining import FIRST_SLAB_ITEMS

    model = fast.model
    engine = _Recording(model.engine)
    encoded = []

    def encode(items):
        encoded.extend(items)
        return model.encode(items)

    hidden = pipelined_last_hidden(engine, PAIRS, encode, chunk_tokens=chunk_tokens, first_tokens=first_tokens,
                                   overlap=True)
    scores = torch.sigmoid(hidden @ model.head).numpy()
    np.testing.assert_allclose(scores, model.score_pairs(PAIRS), atol=1e-5)
    assert encoded == PAIRS
    seqs = model.encode(PAIRS)
    assert [s for c in engine.chunks for s in c] == seqs
    want = min(first_tokens or model.engine.config.first_chunk_tokens, chunk_tokens)
    count = model.engine.computed_tokens
    assert len(engine.chunks) >= 2
    for i, (chunk, after) in enumerate(zip(engine.chunks, engine.chunks[1:])):
        assert count(chunk) <= want or len(chunk) == 1
        # the next sequence would have overfilled it; or it is the whole first slab, sent as soon as it fit
        first_slab = i == 0 and len(chunk) == FIRST_SLAB_ITEMS
        assert count(chunk + after[:1]) > want or first_slab
        want = min(2 * want, chunk_tokens)
    assert count(engine.chunks[-1]) <= want or len(engine.chunks[-1]) == 1
    if chunk_tokens == 10_000:
        assert len(engine.chunks[0]) < max(map(len, engine.chunks))  # a small first chunk starts the GPU early


def test_chunk_sizer_cuts_on_exact_counts():
    from qrank.engine.pipelining import ChunkSizer

    sizer = ChunkSizer(target_tokens=1000, first_tokens=300, growth=2.0)
    counts = [0, 120, 250, 310, 900, 1500]  # computed tokens of the first k sequences

    def fits(k):
        return counts[k] <= sizer.want

    assert sizer.cut(fits, 0, 2) is None  # 250 <= 300: the chunk may still grow
    assert sizer.cut(fits, 2, 4) == 2  # 250 <= 300 < 310
    assert sizer.want == 600
    assert sizer.cut(fits, 0, 5) == 3  # 310 <= 600 < 900
    assert sizer.want == 1000  # capped at the target
    small = ChunkSizer(target_tokens=100)
    assert small.cut(lambda k: counts[k] <= small.want, 0, 1) == 1  # one sequence over the size is a chunk
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
    engine = FastEngine(body)
    h, q, kv = cfg.hidden_size, cfg.num_attention_heads * cfg.head_dim, cfg.num_key_value_heads * cfg.head_dim
    f = cfg.intermediate_size
    assert engine.stack.flops_per_token == 2 * cfg.num_hidden_layers * (h * q + 2 * h * kv + q * h + 3 * h * f)
    assert engine.config.small_model is small
    assert engine.config.first_chunk_tokens == (16384 // 8 if small else 16384)
    assert not engine.config.cuda_graphs  # never off CUDA


def test_the_config_is_resolved_at_load_and_frozen(fast, qwen3_reranker):
    """Every choice sits in one frozen config, which the backend's ModelInfo shows (CLI and /v1/models)."""
    import dataclasses

    engine = fast.model.engine
    assert engine.config.attention == "sdpa" and not engine.config.compile and not engine.config.cuda_graphs
    with pytest.raises(dataclasses.FrozenInstanceError):
        engine.config.attention = "varlen"
    described = fast.model.info.extra["engine"]
    assert described == engine.describe() == {"engine": "fast", **dataclasses.asdict(engine.config), "fallbacks": []}
    assert described["first_chunk_tokens"] == 16384 // 8 and described["small_model"] is True
    assert qwen3_reranker.model.info.extra["engine"]["engine"] == "reference"


def test_a_kernel_that_cannot_run_falls_back_at_load_logged_once(qwen3_reranker_dir, monkeypatch, caplog):
    """attention='triton' and cuda_graphs='on' on a CPU without Triton's interpreter: triton -> varlen -> sdpa
    and graphs off, decided at load, recorded in the config and said in one warning."""
    import logging

    from qrank.engine import attention

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    monkeypatch.setattr(attention, "_PROBED", {})  # this process's answers may have come from the interpreter
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    with caplog.at_level(logging.INFO, logger="qrank.engine"):
        engine = FastEngine(body, attention="triton", cuda_graphs="on")
    assert engine.config.attention == "sdpa" and not engine.config.cuda_graphs
    assert engine.config.fallbacks == (
        "attention: triton -> varlen (needs a CUDA device (or TRITON_INTERPRET=1))",
        "attention: varlen -> sdpa (needs a CUDA device)",
        "cuda_graphs: on -> off (needs CUDA)",
    )
    records = [r for r in caplog.records if r.name.startswith("qrank.engine")]
    assert [r.levelno for r in records] == [logging.WARNING]
    assert "triton -> varlen" in records[0].getMessage()
    seqs = [[5, 6, 7, 8], [5, 6, 9]]
    with caplog.at_level(logging.INFO, logger="qrank.engine"):
        torch.testing.assert_close(engine.last_hidden(seqs), ref.last_hidden(seqs), atol=1e-4, rtol=0)
    assert len([r for r in caplog.records if r.name.startswith("qrank.engine")]) == 1  # nothing more at run time


def _failing_segments(state: dict):
    """The layer halves, eager, raising dynamo's error while ``state['broken']``: a compilation that fails."""
    from torch._dynamo.exc import TorchRuntimeError

    from qrank.engine.qwen3_forward import attn_inputs, attn_output_mlp

    def seg_in(*args):
        if state["broken"]:
            raise TorchRuntimeError("compilation failed (forced by the test)")
        return attn_inputs(*args)

    return seg_in, attn_output_mlp


def test_compile_failing_at_load_falls_back_to_eager(qwen3_reranker_dir, monkeypatch):
    from qrank.engine import fast

    state = {"broken": True}
    monkeypatch.setattr(fast, "compiled_segments", lambda key: _failing_segments(state))
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    engine = FastEngine(body, compile="on")
    assert not engine.config.compile
    assert engine.config.fallbacks == (
        "compile: on -> off (TorchRuntimeError: compilation failed (forced by the test))",)
    seqs = [[5, 6, 7, 8], [5, 6, 9]]
    torch.testing.assert_close(engine.last_hidden(seqs), ref.last_hidden(seqs), atol=1e-4, rtol=0)


def test_a_failure_after_load_raises_instead_of_switching(qwen3_reranker_dir, monkeypatch):
    """Compilation worked at load, fails later: the call raises and the engine keeps its config (it used to
    turn compilation off silently at the first failing pass)."""
    from torch._dynamo.exc import TorchRuntimeError

    from qrank.engine import fast

    state = {"broken": False}
    monkeypatch.setattr(fast, "compiled_segments", lambda key: _failing_segments(state))
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    engine = FastEngine(body, compile="on")
    assert engine.config.compile and engine.config.fallbacks == ()
    seqs = [[5, 6, 7, 8], [5, 6, 9]]
    torch.testing.assert_close(engine.last_hidden(seqs), ref.last_hidden(seqs), atol=1e-4, rtol=0)
    before = engine.config
    state["broken"] = True
    with pytest.raises(TorchRuntimeError):
        engine.last_hidden(seqs)
    assert engine.config is before and engine.config.compile
    state["broken"] = False
    torch.testing.assert_close(engine.last_hidden(seqs), ref.last_hidden(seqs), atol=1e-4, rtol=0)


def test_long_rows_run_their_own_attention_kind(qwen3_reranker_dir, monkeypatch):
    """A pass with a row of LONG_ROW_KEYS keys or more runs ``long_row_attention``'s kind, every other pass
    ``attention``'s, and the scores equal the reference engine's.

    Only bucketed SDPA runs on a CPU, so 'sdpa-cudnn' is played here by plain bucketed SDPA behind a recorder
    (this tests the dispatch); the real long-row kernels are compared with the model card under Triton's
    interpreter (interpreted_triton_attention.py) and on the GPU (tests/gpu)."""
    from qrank.engine import attention, fast

    monkeypatch.setattr(attention, "LONG_ROW_KEYS", 300)
    ran: list[tuple[str, bool]] = []
    real = fast.make_attention

    def recording(kind, layout, *args, **kwargs):
        ran.append((kind, attention.has_long_rows(layout)))
        return real("sdpa" if kind == "sdpa-cudnn" else kind, layout, *args, **kwargs)

    monkeypatch.setattr(fast, "make_attention", recording)
    monkeypatch.setattr(fast, "attention_works", lambda kind, *shape: (True, ""))
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    engine = FastEngine(body, attention="sdpa", long_row_attention="sdpa-cudnn", max_batch_tokens=400)
    assert (engine.config.attention, engine.config.long_row_attention) == ("sdpa", "sdpa-cudnn")
    assert "long_row_attention=sdpa-cudnn" in engine.config.summary()
    assert ran == []  # check passes run at load only with compile or graphs on (CUDA; tests/gpu)
    # a shared 10-token prefix; one member of 300 tokens (310 keys), others short: the passes split at 400 tokens
    seqs = [[5] * 10 + [6 + i % 5] * n for i, n in enumerate([20, 300, 30, 7, 250, 12])]
    torch.testing.assert_close(engine.last_hidden(seqs), ref.last_hidden(seqs), atol=1e-4, rtol=0)
    assert {long for _, long in ran} == {True, False}, "the request should make both kinds of pass"
    assert all(kind == ("sdpa-cudnn" if long else "sdpa") for kind, long in ran), ran


def test_long_row_attention_falls_back_and_validates(qwen3_reranker_dir, monkeypatch):
    """On a CPU the FlashAttention kinds cannot run: the long-row kind falls back at load like ``attention``,
    under its own name, and ends equal to it (shown as ''); a kind that does not exist is refused."""
    from qrank.engine import attention

    monkeypatch.setattr(attention, "_PROBED", {})
    body, ref, FastEngine = _engines(qwen3_reranker_dir)
    config = FastEngine(body, long_row_attention="varlen").config
    assert (config.attention, config.long_row_attention) == ("sdpa", "")
    assert config.fallbacks == ("long_row_attention: varlen -> sdpa (needs a CUDA device)",)
    assert FastEngine(body, long_row_attention="same").config.fallbacks == ()
    with pytest.raises(ValueError, match="long_row_attention must be one of"):
        FastEngine(body, long_row_attention="flash")

"""FP8 on the CPU: the quantizer and the emulated product against a hand-written reference, both engines on a
quantized tiny Qwen3 body, the quality gate (accepts a correct quantization, refuses a broken one) and the
refusals off FP8 hardware.

The reference rounds to the e4m3 grid by enumerating its 256 bit patterns (nearest value, ties to the
even mantissa) and multiplies in float64, so it shares no code with :mod:`qrank.engine.fp8`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qrank.engine.fp8 import (
    E4M3_MAX,
    Fp8Linear,
    Fp8Weight,
    fp8_linear,
    fp8_supported,
    quantize_body,
    quantize_rows,
    quantize_weight,
)
from qrank.errors import InvalidInput, UnsupportedModel
from qrank.models import quantization as qz
from qrank.settings import EngineSettings, ModelSettings


def _e4m3_grid() -> np.ndarray:
    """Every finite float8_e4m3fn value, ascending (bit patterns read as the format defines them)."""
    values = set()
    for bits in range(256):
        sign, exp, man = bits >> 7, (bits >> 3) & 0xF, bits & 0x7
        if exp == 0xF and man == 0x7:  # the only NaN pattern of e4m3fn (no infinities)
            continue
        mag = (man / 8) * 2.0**-6 if exp == 0 else (1 + man / 8) * 2.0 ** (exp - 7)
        values.add(-mag if sign else mag)
    return np.array(sorted(values))


GRID = _e4m3_grid()


def _round_e4m3(x: np.ndarray) -> np.ndarray:
    """Round to the nearest e4m3 value; a tie goes to the value with the even mantissa (IEEE default)."""
    x = np.asarray(x, dtype=np.float64)
    idx = np.clip(np.searchsorted(GRID, x), 1, len(GRID) - 1)
    lo, hi = GRID[idx - 1], GRID[idx]
    pick_hi = (hi - x) < (x - lo)
    tie = (hi - x) == (x - lo)
    # on a tie: the one whose mantissa's last bit is 0, i.e. whose value / its spacing is even
    even_hi = np.array([_mantissa_even(v) for v in hi.ravel()]).reshape(hi.shape)
    pick_hi = np.where(tie, even_hi, pick_hi)
    return np.where(pick_hi, hi, lo)


def _mantissa_even(v: float) -> bool:
    return int(torch.tensor([v], dtype=torch.float32).to(torch.float8_e4m3fn).view(torch.uint8)) % 2 == 0


def _reference_quantize(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-row scales max|row| / 448 and the e4m3 values of row / scale."""
    scale = np.maximum(np.abs(w).max(axis=1) / E4M3_MAX, 1e-12)
    return _round_e4m3(np.clip(w / scale[:, None], -E4M3_MAX, E4M3_MAX)), scale


def _weights(n=48, k=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(n, k, generator=g)
    w[3] *= 40  # an outlier channel: its own scale keeps the other rows' precision
    w[5] = 0  # an all-zero row must not divide by zero
    w[7, 0] = 1e-3  # tiny values fall into e4m3's subnormals
    return w


def test_grid_is_e4m3():
    assert len(GRID) == 253 and GRID.max() == E4M3_MAX  # +-0 merge: 254 finite patterns, one value for zero
    as_fp8 = torch.tensor(GRID, dtype=torch.float32).to(torch.float8_e4m3fn).to(torch.float32).numpy()
    np.testing.assert_array_equal(as_fp8, GRID)


def test_quantize_weight_matches_reference():
    w = _weights()
    q = quantize_weight(w)
    ref_data, ref_scale = _reference_quantize(w.double().numpy())
    np.testing.assert_allclose(q.scale.numpy(), ref_scale, rtol=1e-6)
    np.testing.assert_array_equal(q.data.to(torch.float32).numpy(), ref_data)
    assert q.data.dtype == torch.float8_e4m3fn and q.scale.dtype == torch.float32
    # each row's largest magnitude lands on 448; the zero row stays zero
    assert np.all(np.abs(q.data.to(torch.float32).numpy()[[0, 3, 7]]).max(axis=1) == E4M3_MAX)
    assert not q.data.to(torch.float32)[5].any()
    # relative error of a normal e4m3 value is at most half a step of 3 mantissa bits
    deq, wf = q.dequantize(), w.float()
    big = wf.abs() >= q.scale[:, None] * 2.0**-6  # below this, the fixed steps of the subnormals
    assert ((deq - wf).abs()[big] <= wf.abs()[big] * 2.0**-4 + 1e-12).all()


def test_quantize_rows_matches_reference():
    x = _weights(9, 32, seed=1)
    x8, sx = quantize_rows(x)
    ref, ref_scale = _reference_quantize(x.double().numpy())
    assert tuple(sx.shape) == (9, 1)
    np.testing.assert_allclose(sx[:, 0].numpy(), ref_scale, rtol=1e-6)
    np.testing.assert_array_equal(x8.to(torch.float32).numpy(), ref)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_fp8_linear_emulation_matches_reference(dtype):
    w, x = _weights(), _weights(8, 32, seed=2).reshape(2, 4, 32)
    bias = torch.linspace(-1, 1, 48)
    got = fp8_linear(x.to(dtype), quantize_weight(w), bias.to(dtype))
    wq, sw = _reference_quantize(w.double().numpy())
    xq, sx = _reference_quantize(x.to(dtype).double().reshape(8, 32).numpy())
    ref = (xq @ wq.T) * sx[:, None] * sw[None, :] + bias.to(dtype).double().numpy()
    assert got.shape == (2, 4, 48) and got.dtype == dtype
    tol = 1e-5 if dtype == torch.float32 else 2.0**-7  # the output's own rounding
    np.testing.assert_allclose(got.double().reshape(8, 48).numpy(), ref, rtol=tol, atol=tol * np.abs(ref).max())


def test_fp8_linear_module_and_dispatch():
    lin = torch.nn.Linear(32, 48, bias=False)
    with torch.no_grad():
        lin.weight.copy_(_weights())
    mod = Fp8Linear.from_linear(lin)
    x = torch.randn(4, 32)
    torch.testing.assert_close(mod(x), fp8_linear(x, quantize_weight(lin.weight)))
    assert isinstance(mod.fp8, Fp8Weight) and mod.fp8.numel() == 48 * 32
    # quantization error is small against the float product (a sanity bound, not the reference)
    exact = lin(x)
    assert (mod(x) - exact).abs().max() < 0.1 * exact.abs().max()



def test_dtype_casts_of_a_model_leave_fp8_weights_alone():
    """model.float() / .half() / .to(bfloat16) on a quantized body cast every floating buffer, float8 too (it
    turned the matrix into unscaled float32); the FP8 matrix and its scales keep their dtypes and values."""
    lin = torch.nn.Linear(32, 48, bias=True)
    with torch.no_grad():
        lin.weight.copy_(_weights())
    body = torch.nn.Sequential(Fp8Linear.from_linear(lin))
    data, scale = body[0].weight_fp8.clone(), body[0].weight_scale.clone()
    x = torch.randn(4, 32)
    for cast in (lambda m: m.float(), lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        cast(body)
        assert body[0].weight_fp8.dtype == torch.float8_e4m3fn and body[0].weight_scale.dtype == torch.float32
        assert torch.equal(body[0].weight_fp8.view(torch.uint8), data.view(torch.uint8))
        assert torch.equal(body[0].weight_scale, scale)
    body.float()  # the bias follows the model's casts as any parameter does (rounded by .half() on the way)
    torch.testing.assert_close(body(x), fp8_linear(x, quantize_weight(lin.weight), body[0].bias))

@pytest.mark.parametrize("kernels", [False, True], ids=["reference-ops", "fused-kernels"])
def test_traced_layer_quantizes_each_input_once(monkeypatch, kernels):
    """The GPU path (``torch._scaled_mm``) traced on meta tensors: seven FP8 products per layer and four
    per-token quantizations, one per distinct input (q/k/v share the normed input, gate/up the post-attention
    one). With the fused kernels (:mod:`qrank.engine.fp8_kernels`) those four are the ``qrank::`` ops and no
    amax is left to the compiler; with the reference ops they are four amax reductions. (Before 2026-12-06 the
    layer quantized per projection, seven times, and left the merging to inductor's scheduler.)"""
    from torch.fx.experimental.proxy_tensor import make_fx

    from qrank.engine import fp8, qwen3_forward

    if kernels:
        pytest.importorskip("triton", reason="Triton comes with the test extra")
        from qrank.engine import fp8_kernels  # noqa: F401  (registers the ops and their meta functions)
    real = fp8.fp8_linear
    monkeypatch.setattr(fp8, "fp8_linear", lambda x, w, b=None, **kw: real(x, w, b, emulate=False))
    hidden, heads, kv, dim, inter, t = 64, 4, 2, 16, 96, 32

    def meta(*shape, dtype=torch.bfloat16):
        return torch.empty(*shape, dtype=dtype, device="meta")

    def weight(n, k):
        return Fp8Weight(meta(n, k, dtype=torch.float8_e4m3fn), meta(n, dtype=torch.float32))

    wq, wk, wv, wo = weight(heads * dim, hidden), weight(kv * dim, hidden), weight(kv * dim, hidden), weight(
        hidden, heads * dim)
    w_gate, w_up, w_down = weight(inter, hidden), weight(inter, hidden), weight(hidden, inter)

    def layer(x, r, ln, qn, cos, sin):  # r: the previous layer's MLP output, added by this layer's norm
        q, k, v, x = qwen3_forward.attn_inputs(x, r, ln, wq, wk, wv, None, None, None, qn, qn, cos, sin, 1e-6, heads,
                                               kv, dim, kernels)
        x, r = qwen3_forward.attn_output_mlp(q.reshape(t, -1), x, wo, None, ln, w_gate, w_up, w_down, 1e-6, kernels)
        assert (r is not None) == kernels  # the fused path leaves the residual add to the next layer's norm
        return x if r is None else x + r

    args = (meta(t, hidden), meta(t, hidden), meta(hidden), meta(dim), meta(t, 1, dim), meta(t, 1, dim))
    graph = make_fx(layer)(*args).graph

    def count(g, name):
        return sum(1 for n in g.nodes if n.op == "call_function" and name in str(n.target))

    ops = count(graph, "qrank.fp8_")
    assert (count(graph, "_scaled_mm"), count(graph, "amax"), ops) == ((7, 0, 4) if kernels else (7, 4, 0))
    out = layer(*args)
    assert out.shape == (t, hidden) and out.dtype == torch.bfloat16


def _tiny_reranker(path, **settings):
    from qrank.models.base import resolve_model
    from qrank.models.qwen3_reranker import Qwen3Reranker

    s = ModelSettings(device="cpu", **settings)
    return Qwen3Reranker.load(resolve_model(str(path), s), s)


def test_fast_engine_reads_fp8_weights_like_the_reference_engine(qwen3_reranker_dir):
    from qrank.engine.fast import FastEngine
    from qrank.engine.qwen3_forward import Qwen3Stack
    from qrank.engine.reference import ReferenceEngine

    rr = _tiny_reranker(qwen3_reranker_dir)
    body = rr.model.model
    assert not Qwen3Stack(body).fp8
    assert quantize_body(body) == 7 * len(body.layers)
    assert quantize_body(body) == 0  # idempotent
    assert Qwen3Stack(body).fp8  # what makes cuda_graphs='auto' replay passes on CUDA (graphs_by_default)
    seqs = [list(range(100, 140)), list(range(100, 120)) + [7, 8, 9], [5] * 3]
    engine = FastEngine(body, attention="sdpa", compile="off")
    assert not engine.config.cuda_graphs and not engine.config.fallbacks  # 'auto' asks for none off CUDA
    fast = engine.last_hidden(seqs)
    ref = ReferenceEngine(body, pad_id=0).last_hidden(seqs)  # transformers' modules calling Fp8Linear.forward
    torch.testing.assert_close(fast, ref, rtol=1e-4, atol=1e-4)


def test_engine_kinds_compile_into_their_own_code_objects(qwen3_reranker_dir, monkeypatch):
    """Regression (issue 18): a bf16-style engine and an FP8 engine of one model each get their own compiled
    code, so neither adds guards to the other's; an engine of a kind already seen reuses its wrappers.

    Dynamo keeps compiled entries on the code object it runs; when every engine shared ``attn_inputs``'s,
    the load path's probe engine, the FP8 engine and one-row passes piled entries onto one code object until
    dynamo's recompile limit (8) was hit on the GPU. The eager backend traces and guards exactly as inductor
    would, without compiling kernels, so this runs on the CPU in seconds.
    """
    import copy

    from torch._dynamo.eval_frame import _debug_get_cache_entry_list

    from qrank.engine import fast
    from qrank.engine.qwen3_forward import attn_inputs, attn_output_mlp, layer_segments

    asked, wrappers = [], {}

    def eager_segments(key):  # the engine's compiled_segments(key), on dynamo's eager backend, memoized likewise
        asked.append(key)
        if key not in wrappers:
            wrappers[key] = tuple(torch.compile(f, backend="eager", dynamic=True, fullgraph=True)
                                  for f in layer_segments(key))
        return wrappers[key]

    monkeypatch.setattr(fast, "compiled_segments", eager_segments)
    torch._dynamo.reset()
    body = _tiny_reranker(qwen3_reranker_dir).model.model
    qbody = copy.deepcopy(body)
    quantize_body(qbody)
    seqs = [list(range(100, 140)), list(range(100, 120)) + [7, 8, 9], [5] * 3]
    engines = {}
    for name, b in (("plain", body), ("fp8", qbody)):
        engines[name] = eng = fast.FastEngine(b, attention="sdpa", compile="on")
        assert eng.config.compile and not eng.config.fallbacks
        eager = fast.FastEngine(b, attention="sdpa", compile="off")
        for batch in (seqs, seqs[:1], seqs[1:]):  # a one-row pass as well: dynamo specialises sizes 0 and 1
            torch.testing.assert_close(eng.last_hidden(batch), eager.last_hidden(batch), rtol=1e-5, atol=1e-5)
    k_plain, k_fp8 = engines["plain"].stack.compile_key, engines["fp8"].stack.compile_key
    assert k_plain != k_fp8 and "plain" in k_plain and "fp8" in k_fp8
    codes = {k: [f.__code__ for f in layer_segments(k)] for k in (k_plain, k_fp8)}
    originals = [attn_inputs.__code__, attn_output_mlp.__code__]
    assert all(c is not o for k in codes for c, o in zip(codes[k], originals))
    assert all(a is not b for a, b in zip(codes[k_plain], codes[k_fp8]))
    counts = {k: [len(_debug_get_cache_entry_list(c)) for c in codes[k]] for k in codes}
    print("dynamo cache entries per code object:", counts)
    assert [len(_debug_get_cache_entry_list(c)) for c in originals] == [0, 0]
    # each kind's entries stay few (its general graph and a one-row specialisation), far under the limit of 8
    assert all(1 <= n <= 3 for k in counts for n in counts[k])
    again = fast.FastEngine(body, attention="sdpa", compile="on")  # a second engine of a kind already seen
    again.last_hidden(seqs)
    again.last_hidden(seqs[:1])
    assert again.stack.compile_key == k_plain and again._segments is engines["plain"]._segments
    assert [len(_debug_get_cache_entry_list(c)) for c in codes[k_plain]] == counts[k_plain]  # no recompilation
    assert asked == [k_plain, k_fp8, k_plain]


def test_fp8_weights_compile_with_static_shapes_and_dynamic_tokens(qwen3_reranker_dir):
    """The engine compiles with ``dynamic=True`` (token counts vary); the FP8 weights the stack hands it are
    marked static, so the traced graph has their sizes as constants and only the token count symbolic.
    Symbolic weight sizes made inductor split every per-token quantization into two passes (6% of an 8B-shape
    pass on an H100, bench/logs/fp8_fused_2026-12-06_h100.md). Control: the same weights unmarked trace
    symbolic, so the assertion can fail."""
    from torch.fx.experimental.symbolic_shapes import is_concrete_int

    from qrank.engine.qwen3_forward import Qwen3Stack, layer_segments

    body = _tiny_reranker(qwen3_reranker_dir).model.model
    quantize_body(body)
    w = Qwen3Stack(body).layers[0]
    x = torch.randn(37, body.config.hidden_size)
    a = torch.randn(37, body.config.num_attention_heads * body.config.head_dim)

    def placeholder_shapes(weights):
        graphs = []

        def capture(gm, example_inputs):
            graphs.append(gm)
            return gm

        torch._dynamo.reset()
        seg = torch.compile(layer_segments(("static-shape-test", len(graphs)))[1], backend=capture, dynamic=True,
                            fullgraph=True)
        seg(a, x, weights["wo"], None, w.ln2, weights["w_gate"], weights["w_up"], weights["w_down"], 1e-6)
        shapes = {}
        for node in graphs[0].graph.nodes:
            value = node.meta.get("example_value")
            if node.op == "placeholder" and isinstance(value, torch.Tensor):
                shapes[node.name] = [is_concrete_int(d) for d in value.shape]
        return shapes

    marked = placeholder_shapes({"wo": w.wo, "w_gate": w.w_gate, "w_up": w.w_up, "w_down": w.w_down})
    fp8_data = {k: v for k, v in marked.items() if "data" in k or "scale" in k}
    assert fp8_data and all(all(v) for v in fp8_data.values()), marked
    tokens = [v for k, v in marked.items() if k.startswith(("l_a_", "l_x_"))]
    assert tokens and all(v[0] is False for v in tokens), marked  # the token count stays symbolic

    def unmarked(f):
        return Fp8Weight(f.data.clone(), f.scale.clone(), f.fast_accum)

    plain = placeholder_shapes({k: unmarked(getattr(w, k)) for k in ("wo", "w_gate", "w_up", "w_down")})
    assert any(not all(v) for k, v in plain.items() if "data" in k), plain
    torch._dynamo.reset()


def test_kendall_tau_matches_scipy():
    from scipy.stats import kendalltau

    rng = np.random.default_rng(0)
    for _ in range(50):
        a = rng.integers(0, 4, size=8).astype(float)  # plenty of ties
        b = a + rng.normal(0, 1.0, size=8) * rng.integers(0, 2, size=8)
        want = kendalltau(a, b).statistic
        got = qz.kendall_tau(a.tolist(), b.tolist())
        if np.isnan(want):
            assert got in (0.0, 1.0)
        else:
            assert got == pytest.approx(want, abs=1e-12)


def test_probe_set_shape():
    probes = qz.load_probes()
    assert len(probes) == 10 and all(len(docs) == 8 for _, docs in probes)
    text = " ".join(q + " ".join(d) for q, d in probes)
    assert "高血压" in text and "東京" in text  # Chinese and Japanese
    long_docs = [docs[-1] for _, docs in probes]
    assert min(map(len, long_docs)) > 2000 and max(map(len, long_docs)) > 10000


def _broken(body) -> int:
    """A deliberately wrong quantization: every weight scale four times too large."""
    n = quantize_body(body)
    for m in body.modules():
        if isinstance(m, Fp8Linear):
            m.weight_scale.mul_(4)
    return n


@pytest.fixture(scope="module")
def spread_reranker_dir(tmp_path_factory):
    """The tiny Qwen3 reranker of tests/tiny_models.py initialised with 2.5x the default spread (0.05)."""
    import tiny_models

    return tiny_models.build_qwen3_reranker(tmp_path_factory.mktemp("fp8-reranker"), spread=0.05)


@pytest.fixture(scope="module")
def fp8_tiny(spread_reranker_dir):
    """The tiny Qwen3 reranker through the load path's gate with a correct quantization (CPU emulation)."""
    from qrank.models.qwen3_reranker import Qwen3Reranker

    rr = _tiny_reranker(spread_reranker_dir)
    build = lambda: Qwen3Reranker(rr.model, rr.tokenizer, rr.info, EngineSettings())  # noqa: E731
    return qz.quantize_backend(build, rr.model.model, ModelSettings(quantization="fp8"))


def test_gate_accepts_a_correct_quantization(fp8_tiny):
    q = fp8_tiny.info.extra["quantization"]
    print("gate on the tiny reranker:", q)
    assert q["check"] == "passed" and q["layers_quantized"] == 14
    assert q["tau_mean"] >= 0.85 and q["top1_agreement"] == 1.0 and q["max_abs_delta"] < 0.05 and q["pairs"] == 80
    assert isinstance(fp8_tiny.model.model.layers[0].mlp.down_proj, Fp8Linear)


def test_gate_numbers_on_v1_models_and_the_banner(fp8_tiny, tmp_path):
    from fastapi.testclient import TestClient

    from qrank import Reranker
    from qrank.cli.serve import _quantization_note
    from qrank.server import ModelPool, create_app
    from qrank.settings import Settings

    pool = ModelPool.from_models(rerankers={"tiny-fp8": Reranker(fp8_tiny)})
    settings = Settings(home=tmp_path, server={"allowed_hosts": ["testserver"]})
    with TestClient(create_app(settings, pool)) as client:
        r = client.get("/v1/models")
        assert r.status_code == 200, r.text
        card = r.json()["data"][0]
    assert card["qrank"]["quantization"] == fp8_tiny.info.extra["quantization"]
    assert "fp8: check passed, Kendall tau mean" in _quantization_note(fp8_tiny.info)


def test_gate_refuses_wrong_scales(spread_reranker_dir):
    from qrank.models.qwen3_reranker import Qwen3Reranker

    rr = _tiny_reranker(spread_reranker_dir)
    build = lambda: Qwen3Reranker(rr.model, rr.tokenizer, rr.info, EngineSettings())  # noqa: E731
    with pytest.raises(UnsupportedModel) as err:
        qz.quantize_backend(build, rr.model.model, ModelSettings(quantization="fp8"), quantize=_broken)
    msg = str(err.value)
    assert err.value.field == "quantization"
    assert "Kendall tau" in msg and "top-1" in msg
    for switch in ("quantization_check=False", "--no-quantization-check", "QRANK_MODELS__QUANTIZATION_CHECK=false"):
        assert switch in msg  # the refusal says how to turn the check off, in each place it can be
    # the refusal carries the numbers (above); turning the check off serves the model and records them
    rr2 = _tiny_reranker(spread_reranker_dir)
    build2 = lambda: Qwen3Reranker(rr2.model, rr2.tokenizer, rr2.info, EngineSettings())  # noqa: E731
    out = qz.quantize_backend(build2, rr2.model.model, ModelSettings(quantization="fp8", quantization_check=False),
                              quantize=_broken)
    assert out.info.extra["quantization"]["check"] == "failed, ignored"


def test_fp8_refused_off_fp8_hardware(qwen3_reranker_dir, qwen3_embedder_dir, random_ce_dir):
    from qrank import Embedder, Reranker

    assert fp8_supported("cpu") == (False, "device 'cpu' is not a CUDA GPU")
    with pytest.raises(UnsupportedModel, match="compute capability 8.9") as err:
        Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", quantization="fp8")
    assert err.value.field == "quantization"
    with pytest.raises(UnsupportedModel, match="quantization='fp8'"):
        Embedder.from_pretrained(str(qwen3_embedder_dir), device="cpu", quantization="fp8")
    with pytest.raises(UnsupportedModel, match="for Qwen3 rerankers and embedders"):
        Reranker.from_pretrained(str(random_ce_dir), device="cpu", quantization="fp8")
    with pytest.raises(InvalidInput, match="'int8' is for CPU encoders"):
        Reranker.from_pretrained(str(qwen3_reranker_dir), device="cpu", quantization="int8")


def test_quantization_flag_reaches_the_settings():
    import argparse

    from qrank.cli import core
    from qrank.cli.common import settings_from_args

    parser = argparse.ArgumentParser()
    core.register(parser.add_subparsers())
    args = parser.parse_args(["rerank", "-m", "x", "-q", "q", "d", "--quantization", "fp8", "--no-quantization-check"])
    s = settings_from_args(args)
    assert s.models.quantization == "fp8" and s.models.quantization_check is False
    with pytest.raises(SystemExit):
        parser.parse_args(["rerank", "-m", "x", "-q", "q", "d", "--quantization", "fp4"])


def test_fast_accumulation_setting_reaches_every_product_and_the_caches(spread_reranker_dir):
    """``quantization_fast_accumulation``: every FP8 projection carries the flag before the FP8 engine is built
    (so its compiled code is its own kind), the model card says so, and the revision differs from exact FP8's,
    so no cache serves one for the other. What the flag does to speed and error is measured on the GPU
    (docs/quantization.md; tests/gpu/test_fp8_gpu.py prints the product error); the CPU emulation ignores it."""

    from qrank.cli.serve import _quantization_note
    from qrank.models.qwen3_reranker import Qwen3Reranker

    rr = _tiny_reranker(spread_reranker_dir)
    build = lambda: Qwen3Reranker(rr.model, rr.tokenizer, rr.info, EngineSettings(engine="fast"))  # noqa: E731
    settings = ModelSettings(quantization="fp8", quantization_fast_accumulation=True)
    backend = qz.quantize_backend(build, rr.model.model, settings)
    modules = [m for m in rr.model.model.modules() if isinstance(m, Fp8Linear)]
    assert len(modules) == 14 and all(m.fast_accum for m in modules)
    assert backend.engine.stack.compile_key[8] == "fp8-fast"
    assert backend.info.extra["quantization"]["accumulation"] == "fast"
    assert "fp8 (fast accumulation): check" in _quantization_note(backend.info)
    assert qz.revision_suffix(settings) == "+fp8-fastacc" != qz.revision_suffix(ModelSettings(quantization="fp8"))

    _flag_and_keyword_reach_the_setting("quantization_fast_accumulation")


def _flag_and_keyword_reach_the_setting(field: str) -> None:
    """``--<field>`` on ``qrank rerank`` and ``from_pretrained(<field>=True)`` set ``models.<field>``."""
    import argparse

    from qrank.cli import core
    from qrank.cli.common import settings_from_args
    from qrank.reranker import _with_overrides

    parser = argparse.ArgumentParser()
    core.register(parser.add_subparsers())
    args = parser.parse_args(["rerank", "-m", "x", "-q", "q", "d", "--quantization", "fp8",
                              "--" + field.replace("_", "-")])
    assert getattr(settings_from_args(args).models, field) is True
    assert getattr(_with_overrides(None, **{field: True}).models, field) is True


def test_fp8_attention_setting_reaches_the_engine_the_card_and_the_caches(spread_reranker_dir):
    """``quantization_fp8_attention``: the quantizer marks the body before the FP8 engine is built; an engine whose
    attention has no FP8 form (here bucketed SDPA: the CPU has no Triton kernel outside the interpreter) records the
    fallback and runs bf16 attention, and the model card says which ran; the revision differs from plain FP8's, so no
    cache serves one for the other; the flag and the facade's keyword reach the setting. The kernel's FP8 form is
    checked under the interpreter (tests/numerics/interpreted_triton_attention.py) and on the GPU."""

    from qrank.engine.fp8_attention import fp8_attention_marked
    from qrank.models.qwen3_reranker import Qwen3Reranker

    rr = _tiny_reranker(spread_reranker_dir)
    build = lambda: Qwen3Reranker(rr.model, rr.tokenizer, rr.info, EngineSettings(engine="fast"))  # noqa: E731
    settings = ModelSettings(quantization="fp8", quantization_fp8_attention=True)
    backend = qz.quantize_backend(build, rr.model.model, settings)
    assert fp8_attention_marked(rr.model.model) == "qk"
    config = backend.engine.config
    assert config.attention == "sdpa" and not config.fp8_attention
    assert config.fallbacks == ("fp8_attention: on -> off (only the triton attention has an FP8 form; this engine "
                                "runs sdpa)",)
    q = backend.info.extra["quantization"]
    assert q["attention"] == "bfloat16" and q["check"] == "passed"
    assert qz.revision_suffix(settings) == "+fp8-fp8attn"
    assert qz.revision_suffix(settings.model_copy(update={"quantization_fast_accumulation": True})) == \
        "+fp8-fastacc-fp8attn"
    _flag_and_keyword_reach_the_setting("quantization_fp8_attention")


def test_static_qk_scales_go_to_the_kernel_as_built():
    """The 'qk' form's scale vector (q, k, and 1 for v) is built once per layer with the engine and handed to the
    kernel as it is: rebuilding it in each pass cost a kernel launch per layer on an H100 (device_2026-12-07n).
    The casts use those scales: dequantized q and k are within e4m3's rounding of the originals."""
    from qrank.engine.fp8_attention import qk_scales, quantize_attention_inputs

    gen = torch.Generator().manual_seed(3)
    q_norm, k_norm = torch.rand(16, generator=gen) + 0.5, torch.rand(16, generator=gen) + 0.5
    q = torch.nn.functional.rms_norm(torch.randn(7, 4, 16, generator=gen), (16,), q_norm)
    k = torch.nn.functional.rms_norm(torch.randn(7, 2, 16, generator=gen), (16,), k_norm)
    v = torch.randn(7, 2, 16, generator=gen)
    scales = qk_scales(q_norm, k_norm, 16)
    assert scales.dtype == torch.float32 and scales[2] == 1
    q8, k8, fv = quantize_attention_inputs(q, k, v, scales, values=False)
    assert fv.scales is scales and fv.vt is v
    for x8, x, s in ((q8, q, scales[0]), (k8, k, scales[1])):
        assert x8.dtype == torch.float8_e4m3fn
        torch.testing.assert_close(x8.float() * s, x, atol=float(s) * 2 ** -6, rtol=2 ** -3)
    _, _, fv_all = quantize_attention_inputs(q, k, v, scales)  # 'all' measures v per pass
    assert fv_all.scales[:2].tolist() == scales[:2].tolist() and fv_all.scales[2] != 1

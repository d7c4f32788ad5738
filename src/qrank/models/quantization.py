"""FP8 for the Qwen3 backends, with a quality gate on the model actually loaded.

``quantization="fp8"`` (settings ``models.quantization``) quantizes the projections of the decoder body
(:mod:`qrank.engine.fp8`) after the bfloat16 weights are loaded. Before the model serves, the gate scores
a built-in probe set (``data/quantization_probes.json``: 10 queries in six languages, Chinese and
Japanese included, each with 7 short documents and one long one of ~0.7k-3.1k tokens) once in bfloat16 and
once in FP8 and compares them per query:

* Kendall tau-b of the two orders of the query's 8 documents (mean and minimum over queries);
* top-1 agreement: the fraction of queries whose best document is the same;
* max |Δ score| over all pairs (probabilities for rerankers, cosines for embedders).

Defaults (``quantization_min_tau=0.8``, ``quantization_min_top1=0.9``, ``quantization_max_delta=0.1``):
with 8 documents one swap of two neighbours costs a query 2/28 of tau, so a mean of 0.8 lets each query
swap about two near-tied documents (the irrelevant ones often are) but not reorder its ranking; 0.9
top-1 lets one query of ten change its best document; 0.1 is far above FP8's rounding (a few 0.01 on a
probability near 0.5) and far below the failures seen in other servers' FP8 rerankers (every score 0.5,
1.0 or 0). Below any threshold the model is refused with the numbers, unless ``quantization_check=false``.
The numbers go into ``ModelInfo.extra["quantization"]`` (``/v1/models``, the serve banner, the log).

>>> kendall_tau([1, 2, 3, 4], [1, 2, 4, 3])
0.6666666666666666
>>> compare([[0.9, 0.5, 0.1]], [[0.8, 0.55, 0.1]]).to_dict()["top1_agreement"]
1.0
"""

from __future__ import annotations

import gc
import json
import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from importlib import resources

import numpy as np

from ..errors import InvalidInput, UnsupportedModel
from ..settings import ModelSettings

log = logging.getLogger(__name__)

PROBES_FILE = "quantization_probes.json"
# the long document of query i gathers 24 + 10 * i of the other queries' documents (~0.7k to ~3.3k tokens)
LONG_BASE, LONG_STEP = 24, 10


def load_probes() -> list[tuple[str, list[str]]]:
    """The probe set: (query, documents) per query, each query's long document last.

    >>> probes = load_probes()
    >>> len(probes), {len(docs) for _, docs in probes}
    (10, {8})
    """
    raw = json.loads(resources.files("qrank.models").joinpath("data", PROBES_FILE).read_text(encoding="utf-8"))
    queries = [(q["query"], list(q["documents"])) for q in raw["queries"]]
    out = []
    for i, (query, docs) in enumerate(queries):
        others = [d for j, (_, ds) in enumerate(queries) if j != i for d in ds]
        filler = [others[(5 * k + i) % len(others)] for k in range(LONG_BASE + LONG_STEP * i)]
        middle = len(filler) // 2
        # the query's second document (relevant, short) buried in unrelated text: a real long-context test
        long_doc = "\n\n".join(filler[:middle] + [docs[1]] + filler[middle:])
        out.append((query, docs + [long_doc]))
    return out


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float:
    """Kendall's tau-b of two score lists (ties counted as scipy does); 1.0 when both are constant.

    >>> kendall_tau([3, 2, 1], [1, 2, 3])
    -1.0
    """
    n = len(a)
    if n != len(b):
        raise ValueError("kendall_tau needs two lists of one length")
    concordant = discordant = ties_a = ties_b = 0
    for i in range(n):
        for j in range(i + 1, n):
            da = (a[i] > a[j]) - (a[i] < a[j])
            db = (b[i] > b[j]) - (b[i] < b[j])
            if da == 0 and db == 0:
                continue
            if da == 0:
                ties_a += 1
            elif db == 0:
                ties_b += 1
            elif da == db:
                concordant += 1
            else:
                discordant += 1
    denom = math.sqrt((concordant + discordant + ties_a) * (concordant + discordant + ties_b))
    if denom == 0:
        return 1.0 if ties_a == ties_b == 0 else 0.0
    return (concordant - discordant) / denom


@dataclass(frozen=True)
class Agreement:
    """How closely the quantized model's probe scores follow the bfloat16 ones."""

    tau_mean: float
    tau_min: float
    top1_agreement: float
    max_abs_delta: float
    queries: int
    pairs: int

    def failures(self, settings: ModelSettings) -> list[str]:
        """The thresholds this agreement misses (empty: it passes)."""
        out = []
        if not self.tau_mean >= settings.quantization_min_tau:
            out.append(f"mean Kendall tau {self.tau_mean:.3f} < quantization_min_tau {settings.quantization_min_tau}")
        if not self.top1_agreement >= settings.quantization_min_top1:
            out.append(f"top-1 agreement {self.top1_agreement:.2f} < quantization_min_top1 "
                       f"{settings.quantization_min_top1}")
        if not self.max_abs_delta <= settings.quantization_max_delta:
            out.append(f"max |Δ score| {self.max_abs_delta:.4f} > quantization_max_delta "
                       f"{settings.quantization_max_delta}")
        return out

    def summary(self) -> str:
        return (f"Kendall tau mean {self.tau_mean:.3f} (min {self.tau_min:.3f}), top-1 agreement "
                f"{self.top1_agreement:.2f}, max |Δ score| {self.max_abs_delta:.4f} over {self.queries} queries / "
                f"{self.pairs} pairs")

    def to_dict(self) -> dict:
        return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def compare(reference: Sequence[Sequence[float]], quantized: Sequence[Sequence[float]]) -> Agreement:
    """Per-query score lists of the reference and the quantized model → :class:`Agreement`."""
    taus, top1, delta, pairs = [], 0, 0.0, 0
    for ref, got in zip(reference, quantized, strict=True):
        ref, got = np.asarray(ref, dtype=np.float64), np.asarray(got, dtype=np.float64)
        taus.append(kendall_tau(ref.tolist(), got.tolist()))
        top1 += int(np.argmax(ref) == np.argmax(got))
        delta = max(delta, float(np.max(np.abs(ref - got))) if len(ref) else 0.0)
        pairs += len(ref)
    if not np.all(np.isfinite([delta])):
        delta = math.inf
    return Agreement(float(np.mean(taus)), float(np.min(taus)), top1 / len(taus), delta, len(taus), pairs)


def probe_scores(backend, probes) -> list[np.ndarray]:
    """Per-query scores of the probe set: reranker probabilities, or embedder cosines of query and document."""
    sizes = [len(docs) for _, docs in probes]
    starts = np.cumsum([0] + sizes)
    if hasattr(backend, "score_pairs"):
        flat = np.asarray(backend.score_pairs([(q, d) for q, docs in probes for d in docs]), dtype=np.float64)
        return [flat[s : s + n] for s, n in zip(starts, sizes)]
    queries = np.asarray(backend.embed_batch([q for q, _ in probes], is_query=True), dtype=np.float64)
    docs = np.asarray(backend.embed_batch([d for _, ds in probes for d in ds]), dtype=np.float64)
    return [docs[s : s + n] @ queries[i] for i, (s, n) in enumerate(zip(starts, sizes))]


# every place the gate can be turned off, named in its refusal (a user meets it from any of them)
CHECK_OFF_SWITCHES = ("from_pretrained(..., quantization_check=False), the --no-quantization-check flag, "
                      "QRANK_MODELS__QUANTIZATION_CHECK=false or models.quantization_check = false in the settings")


def check_fp8_request(settings: ModelSettings, device: str, dtype, *, fix: str = "use quantization='none'") -> None:
    """Refuse ``quantization`` values a Qwen3 backend cannot run here, before any weight is loaded.

    ``fix``: the advice that ends the refusal on hardware without FP8 units.

    >>> import torch
    >>> try:
    ...     check_fp8_request(ModelSettings(quantization="fp8"), "cpu", torch.float32)
    ... except UnsupportedModel as exc:
    ...     print(exc.field, "|", exc.message.split(": ")[-1])
    quantization | device 'cpu' is not a CUDA GPU; use quantization='none'
    """
    q = settings.quantization
    if q == "none":
        return
    if q != "fp8":
        raise InvalidInput("quantization", f"{q!r} is not available for Qwen3 models (use 'none' or 'fp8'; "
                                           "'int8' is for CPU encoders)")
    from ..engine.fp8 import fp8_supported

    ok, why = fp8_supported(device)
    if not ok:
        raise UnsupportedModel(f"quantization='fp8' needs a CUDA GPU with FP8 matrix units (compute capability "
                               f"8.9+: L4, L40, H100, H200...): {why}; {fix}", field="quantization")
    import torch

    if dtype != torch.bfloat16:  # the FP8 products return bfloat16 (torch._scaled_mm's row-wise kernels)
        raise InvalidInput("dtype", f"quantization='fp8' runs the rest of the model in bfloat16, not {dtype}; "
                                    "use dtype='bfloat16' or 'auto'")


def revision_suffix(settings: ModelSettings) -> str:
    """What a quantized model adds to its revision, so caches never serve one form's scores for another's.

    >>> revision_suffix(ModelSettings()), revision_suffix(ModelSettings(quantization="fp8"))
    ('', '+fp8')
    >>> revision_suffix(ModelSettings(quantization="fp8", quantization_fast_accumulation=True))
    '+fp8-fastacc'
    >>> revision_suffix(ModelSettings(quantization="fp8", quantization_fp8_attention=True))
    '+fp8-fp8attn'
    """
    if settings.quantization != "fp8":
        return ""
    return ("+fp8" + ("-fastacc" if settings.quantization_fast_accumulation else "")
            + ("-fp8attn" if settings.quantization_fp8_attention else ""))


def gated_backend(build: Callable[[], object], body, settings: ModelSettings, checkpoint=None):
    """The backend a Qwen3 loader returns: over a pre-quantized checkpoint's FP8 weights (``checkpoint``, from
    :func:`~qrank.models.fp8_checkpoints.open_fp8_checkpoint`) or qrank's own FP8 weights, each gated on the probe
    set; else ``build()`` as it is."""
    if checkpoint is not None:
        return checkpoint.gate(build, body, settings)
    if settings.quantization == "fp8":
        return quantize_backend(build, body, settings)
    return build()


def quantize_backend(build: Callable[[], object], body, settings: ModelSettings, *,
                     quantize: Callable[[object], int] | None = None, source: dict | None = None):
    """Build the backend, quantize ``body`` to FP8, rebuild it, and gate it on the probe set.

    ``build()`` makes a backend over the (current) weights of ``body``; ``quantize(body)`` replaces its
    projections in place (default :func:`qrank.engine.fp8.quantize_body`; tests pass a broken one).
    ``source``: for a pre-quantized checkpoint (:mod:`qrank.models.fp8_checkpoints`), whose ``body`` holds
    the dequantized weights and whose ``quantize`` installs the checkpoint's own, the fields saying so
    (``source``, ``weights``, ``reference``), added to the numbers and named in the refusal.
    Returns the FP8 backend, whose ``info.extra["quantization"]`` holds the agreement.
    """
    from ..engine.fp8 import quantize_body, set_fast_accumulation
    from ..engine.fp8_attention import set_fp8_attention

    quantize = quantize or quantize_body
    probes = load_probes()
    backend = build()
    reference = probe_scores(backend, probes)
    del backend  # its engine holds views of the bfloat16 weights: drop it so quantizing frees them
    gc.collect()
    _empty_cuda_cache()
    replaced = quantize(body)
    set_fast_accumulation(body, settings.quantization_fast_accumulation)
    set_fp8_attention(body, "qk" if settings.quantization_fp8_attention else "")
    _empty_cuda_cache()
    backend = build()
    agreement = compare(reference, probe_scores(backend, probes))
    failed = agreement.failures(settings)
    info = backend.info
    info.extra["quantization"] = {
        "method": "fp8", "weights": "e4m3 per output channel", "activations": "e4m3 per token, dynamic",
        "accumulation": "fast" if settings.quantization_fast_accumulation else "float32",
        "attention": _attention_form(backend),
        "layers_quantized": replaced, **(source or {}),
        "check": "passed" if not failed else ("failed" if settings.quantization_check else "failed, ignored"),
        **agreement.to_dict(),
    }
    against = f"{source['reference']} ({source['source']})" if source else "bfloat16"
    if failed and settings.quantization_check:
        fix = ("its scales or layout do not reproduce its own weights under qrank's FP8 kernels; serve its bfloat16 "
               "original" if source else "serve it with quantization='none'")
        raise UnsupportedModel(
            f"{info.id}: FP8 scores disagree with {against} on the probe set ({'; '.join(failed)}; "
            f"{agreement.summary()}); {fix}, or turn the check off to serve FP8 anyway: {CHECK_OFF_SWITCHES}",
            field="quantization")
    level = logging.WARNING if failed else logging.INFO
    log.log(level, "%s: fp8 (%d projections) vs %s on the probe set: %s%s", info.id, replaced, against,
            agreement.summary(), " - BELOW THRESHOLDS, served because quantization_check=false" if failed else "")
    return backend


def _attention_form(backend) -> str:
    """What the engine runs attention in: FP8 only where it was asked for and the engine has an FP8 form."""
    engine = getattr(backend, "engine", None)
    config = getattr(engine, "config", None)
    form = getattr(config, "fp8_attention", "")
    if form == "all":
        return "e4m3 (q, k: static bound of their norms; v: per pass)"
    if form == "qk":
        return "q, k e4m3 (static bound of their norms); p, v bfloat16"
    return "bfloat16"


def _empty_cuda_cache() -> None:
    import torch

    if torch.cuda.is_available():
        torch.cuda.empty_cache()

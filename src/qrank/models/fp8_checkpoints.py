"""Pre-quantized FP8 checkpoints of Qwen3 rerankers and embedders, loaded onto qrank's FP8 projections.

Detected from ``config.json``'s ``quantization_config`` (never from the name), two published layouts:

* **compressed-tensors** (llm-compressor ``FP8_DYNAMIC``, what vLLM and RedHatAI publish): each quantized
  Linear's ``weight`` in float8_e4m3fn (N, K) and ``weight_scale`` float32 (N, 1), activations dynamic per
  token. That is qrank's own recipe (:mod:`qrank.engine.fp8`), so the tensors become an ``Fp8Linear`` as they
  are; a ``"strategy": "tensor"`` scale is broadcast to every channel (exact).
* **Qwen's fine-grained fp8** (``quant_method: fp8``, Qwen/Qwen3-8B-FP8): ``weight`` float8_e4m3fn with
  ``weight_scale_inv`` per 128x128 block. qrank's kernels take one scale per output channel, so each matrix
  is dequantized to float32 and *requantized* per channel: a second rounding, measured by the gate.

Transformers' own quantizers are not used (they need the ``compressed-tensors`` package or a GPU): the model
is built by ``from_pretrained`` from a state dict holding the checkpoint's plain tensors and the
*dequantized* projections. That bfloat16 model is the gate's reference; :meth:`Fp8Checkpoint.install` then
puts ``Fp8Linear`` modules made from the FP8 tensors in place of the q/k/v/o/gate/up/down projections.

>>> detect_fp8_checkpoint({"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic",
...                                                "weight_block_size": [128, 128], "fmt": "e4m3"}}).source
'checkpoint (fp8 block 128x128, requantized per channel)'
"""

from __future__ import annotations

import json
import logging
import math
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import UnsupportedModel
from ..settings import ModelSettings

log = logging.getLogger(__name__)

FP8_DTYPES = ("F8_E4M3",)  # safetensors' name of float8_e4m3fn
SCALE_DTYPES = ("F32", "BF16", "F16")
CT_FORMATS = ("float-quantized", "naive-quantized")
REFERENCE = "the checkpoint's weights dequantized, activations unquantized"


@dataclass(frozen=True)
class Fp8Scheme:
    """A checked ``quantization_config``: ``strategy`` is "channel", "tensor" (compressed-tensors) or "block"."""

    strategy: str
    block: tuple[int, int] | None = None

    @property
    def scale_suffix(self) -> str:
        return "weight_scale_inv" if self.block else "weight_scale"

    @property
    def source(self) -> str:
        if self.block:
            return f"checkpoint (fp8 block {self.block[0]}x{self.block[1]}, requantized per channel)"
        return {"channel": "checkpoint (compressed-tensors FP8_DYNAMIC)",
                "tensor": "checkpoint (compressed-tensors FP8, per-tensor weight scales broadcast per channel)"
                }[self.strategy]


def detect_fp8_checkpoint(config: dict) -> Fp8Scheme | None:
    """The FP8 scheme ``config.json`` declares; None without a ``quantization_config``.

    Any other quantization (static activation scales, int or 4-bit formats, groups, another method) is an
    :class:`UnsupportedModel` naming what is unsupported.

    >>> detect_fp8_checkpoint({"model_type": "qwen3"}) is None
    True
    >>> detect_fp8_checkpoint({"quantization_config": {"quant_method": "awq"}})
    Traceback (most recent call last):
    qrank.errors.UnsupportedModel: quantization_config: quant_method 'awq' is not supported; qrank loads ...
    """
    qc = config.get("quantization_config")
    if not qc:
        return None
    method = qc.get("quant_method")
    if method == "fp8":
        return _qwen_fp8(qc)
    if method == "compressed-tensors":
        return _compressed_tensors(qc)
    raise _unsupported(f"quant_method {method!r}")


def _unsupported(what: str) -> UnsupportedModel:
    return UnsupportedModel(f"quantization_config: {what} is not supported; qrank loads compressed-tensors "
                            "FP8_DYNAMIC (float8 weights per channel or tensor, dynamic per-token float8 "
                            "activations), Qwen fp8 (dynamic activations, block weight scales) and unquantized "
                            "checkpoints")


def _qwen_fp8(qc: dict) -> Fp8Scheme:
    if qc.get("activation_scheme", "dynamic") != "dynamic":
        raise _unsupported(f"fp8 activation_scheme {qc['activation_scheme']!r} (static activation scales)")
    if qc.get("fmt", "e4m3") != "e4m3":
        raise _unsupported(f"fp8 fmt {qc['fmt']!r}")
    block = qc.get("weight_block_size")
    if not (isinstance(block, list | tuple) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise _unsupported(f"fp8 weight_block_size {block!r} (two positive integers expected)")
    return Fp8Scheme("block", (block[0], block[1]))


def _compressed_tensors(qc: dict) -> Fp8Scheme:
    extra = [k for k in ("sparsity_config", "transform_config", "kv_cache_scheme") if qc.get(k)]
    if extra or not qc.get("config_groups"):
        raise _unsupported(f"compressed-tensors {extra[0] if extra else 'without config_groups'}")
    strategies = set()
    for name, group in qc["config_groups"].items():
        fmt, w, a = group.get("format") or qc.get("format"), group.get("weights") or {}, group.get("input_activations")
        if fmt not in CT_FORMATS:
            raise _unsupported(f"compressed-tensors format {fmt!r} (group {name})")
        for field, value in {"num_bits": 8, "type": "float", "dynamic": False}.items():
            if w.get(field) != value:
                raise _unsupported(f"weights {field}={w.get(field)!r} in group {name} (8-bit float weights with "
                                   "stored scales expected)")
        if w.get("strategy") not in ("channel", "tensor") or not w.get("symmetric", True) or w.get("group_size"):
            raise _unsupported(f"weights strategy {w.get('strategy')!r} in group {name} (symmetric per channel or "
                               "per tensor expected)")
        if not a:
            raise _unsupported(f"weight-only FP8 (no input_activations) in group {name}")
        if not a.get("dynamic"):
            raise _unsupported(f"static activation scales (input_activations dynamic=false) in group {name}")
        if (a.get("num_bits"), a.get("type"), a.get("strategy")) != (8, "float", "token") or \
                group.get("output_activations"):
            raise _unsupported(f"input_activations {a.get('num_bits')}-bit {a.get('type')} per {a.get('strategy')}"
                               f"{' with output_activations' if group.get('output_activations') else ''} in group "
                               f"{name} (8-bit float per token expected)")
        strategies.add(w["strategy"])
    if len(strategies) > 1:
        raise _unsupported(f"mixed weight strategies {sorted(strategies)}")
    return Fp8Scheme(strategies.pop())


def dequantize_blocks(data, scale_inv, block: tuple[int, int]):
    """The float32 weight of a block-quantized FP8 matrix: each (bn, bk) block times its scale, edges partial.

    >>> import torch
    >>> w = dequantize_blocks(torch.ones(3, 5).to(torch.float8_e4m3fn), torch.tensor([[1.0, 2.0], [3.0, 4.0]]), (2, 4))
    >>> w.tolist()
    [[1.0, 1.0, 1.0, 1.0, 2.0], [1.0, 1.0, 1.0, 1.0, 2.0], [3.0, 3.0, 3.0, 3.0, 4.0]]
    """
    import torch

    n, k = data.shape
    scale = scale_inv.to(torch.float32).repeat_interleave(block[0], 0)[:n].repeat_interleave(block[1], 1)[:, :k]
    return data.to(torch.float32) * scale


class Fp8Checkpoint:
    """The FP8 tensors of one checkpoint folder (``model.safetensors`` or a sharded index), checked at once.

    Every Linear with a scale tensor is a quantized module (so ``ignore`` lists need no parsing); their
    shapes and dtypes are checked against the scheme before any weight is read.

    >>> import tempfile, torch
    >>> from safetensors.torch import save_file
    >>> folder = Path(tempfile.mkdtemp())
    >>> save_file({"layers.0.mlp.up_proj.weight": torch.ones(4, 2).to(torch.float8_e4m3fn),
    ...            "layers.0.mlp.up_proj.weight_scale": torch.full((4, 1), 0.5)}, folder / "model.safetensors")
    >>> ckpt = Fp8Checkpoint(folder, Fp8Scheme("channel"))
    >>> w = ckpt.fp8_weight("layers.0.mlp.up_proj")
    >>> sorted(ckpt.modules), w.scale.tolist(), w.dequantize()[0].tolist()
    (['layers.0.mlp.up_proj'], [0.5, 0.5, 0.5, 0.5], [0.5, 0.5])
    """

    def __init__(self, path: Path, scheme: Fp8Scheme) -> None:
        self.path, self.scheme = Path(path), scheme
        self.files = _weight_files(self.path)
        meta = _read(self.files, self.files, meta=True)  # the headers: no tensor is read here
        suffix = "." + scheme.scale_suffix
        self.modules = sorted(k[: -len(suffix)] for k in meta if k.endswith(suffix))
        orphans = [k for k, (dtype, _) in meta.items() if dtype in FP8_DTYPES and k.endswith(".weight")
                   and k[: -len(".weight")] not in self.modules]
        if orphans:
            raise self._corrupt(f"{orphans[0]} is FP8 but has no {scheme.scale_suffix}")
        for m in self.modules:
            self._check(m, meta)

    def _corrupt(self, why: str) -> UnsupportedModel:
        return UnsupportedModel(f"{self.path}: corrupt or mismatched FP8 checkpoint, {self.scheme.source}: {why}")

    def _check(self, module: str, meta: dict) -> None:
        if module + ".weight" not in meta:
            raise self._corrupt(f"{module}.{self.scheme.scale_suffix} has no {module}.weight")
        (wdt, wshape), (sdt, sshape) = meta[module + ".weight"], meta[f"{module}.{self.scheme.scale_suffix}"]
        if wdt not in FP8_DTYPES or len(wshape) != 2:
            raise self._corrupt(f"{module}.weight is {wdt} {wshape}; a 2-D float8_e4m3fn (F8_E4M3) matrix expected")
        n, k = wshape
        expected = {"channel": [[n, 1], [n]], "tensor": [[], [1], [1, 1]]}.get(self.scheme.strategy)
        if expected is None:
            bn, bk = self.scheme.block
            expected = [[math.ceil(n / bn), math.ceil(k / bk)]]
        if sdt not in SCALE_DTYPES or list(sshape) not in expected:
            raise self._corrupt(f"{module}.{self.scheme.scale_suffix} is {sdt} {list(sshape)}; for a {n}x{k} weight "
                                f"with {self.scheme.strategy} scales a float tensor of shape {expected[0]} expected")

    def _tensors(self, module: str):
        """(fp8 data, float32 scale) of ``module``, the scale checked finite and non-negative."""
        import torch

        key = f"{module}.{self.scheme.scale_suffix}"
        got = _read(self.files, [module + ".weight", key])
        scale = got[key].to(torch.float32)
        if not bool(torch.isfinite(scale).all()) or bool((scale < 0).any()):
            raise self._corrupt(f"{key} holds negative, infinite or NaN scales")
        return got[module + ".weight"], scale

    def fp8_weight(self, module: str):
        """``module``'s :class:`~qrank.engine.fp8.Fp8Weight`: the checkpoint's tensors as they are (channel, tensor
        scales broadcast), or for blocks the dequantized matrix requantized per output channel."""
        from ..engine.fp8 import Fp8Weight, quantize_weight

        data, scale = self._tensors(module)
        if self.scheme.strategy == "block":
            return quantize_weight(dequantize_blocks(data, scale, self.scheme.block))
        return Fp8Weight(data.contiguous(), scale.reshape(-1).expand(data.shape[0]).contiguous())

    def dequantized(self, module: str, dtype):
        """What the checkpoint's FP8 matrix of ``module`` stands for, in ``dtype``."""
        data, scale = self._tensors(module)
        if self.scheme.strategy == "block":
            return dequantize_blocks(data, scale, self.scheme.block).to(dtype)
        return (data.to(scale.dtype) * scale.reshape(-1, 1)).to(dtype)

    def load_model(self, auto, *, dtype, trust_remote_code: bool = False):
        """The transformers model (class from ``auto``, e.g. ``AutoModelForCausalLM``) with every quantized
        matrix dequantized to ``dtype``: the gate's reference. On the CPU; the caller moves it."""
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(str(self.path), trust_remote_code=trust_remote_code)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # transformers' own quantizer stays out: the weights arrive dequantized
        fp8 = {f"{m}.{s}" for m in self.modules for s in ("weight", self.scheme.scale_suffix)}
        state = _read(self.files, [k for k in self.files if k not in fp8])  # each FP8 matrix read once, below
        for m in self.modules:
            state[m + ".weight"] = self.dequantized(m, dtype)
        # the class ``auto`` picks for this config, found through public API only: an instance built on the meta
        # device (no memory, no initialisation); transformers takes ``state_dict`` with no checkpoint name only
        # from a model class, not from an auto class
        import torch

        with torch.device("meta"):
            model_class = type(auto.from_config(config, trust_remote_code=trust_remote_code))
        return model_class.from_pretrained(None, config=config, state_dict=state, dtype=dtype)

    def install(self, body) -> int:
        """Put ``Fp8Linear`` modules from the checkpoint in place of ``body``'s quantized projections (q/k/v/o,
        gate/up/down of each layer, keys with or without ``model.``); returns how many. Biases stay as loaded."""
        from ..engine.fp8 import PROJECTIONS, Fp8Linear, Fp8Weight

        names, quantized, replaced = {n for ns in PROJECTIONS.values() for n in ns}, set(self.modules), 0
        for name, old in list(body.named_modules()):
            module = name if name in quantized else "model." + name
            if module not in quantized or not name.startswith("layers.") or name.rpartition(".")[2] not in names:
                continue  # not a projection, or one the checkpoint kept unquantized
            w = self.fp8_weight(module)
            if tuple(w.data.shape) != tuple(old.weight.shape):
                raise self._corrupt(f"{module} is {tuple(w.data.shape)}; the config makes it {tuple(old.weight.shape)}")
            parent, _, child = name.rpartition(".")
            dev = old.weight.device
            setattr(body.get_submodule(parent), child, Fp8Linear(Fp8Weight(w.data.to(dev), w.scale.to(dev)), old.bias))
            replaced += 1
        return replaced

    def gate(self, build, body, settings: ModelSettings):
        """:func:`~qrank.models.quantization.quantize_backend` with :meth:`install` as the quantizer: the probe
        scores of ``body`` as loaded (dequantized weights) against those of the checkpoint's FP8 weights."""
        from .quantization import quantize_backend

        weights = "e4m3 per output channel" + (" (requantized from blocks)" if self.scheme.block else "")
        return quantize_backend(build, body, settings, quantize=self.install,
                                source={"source": self.scheme.source, "weights": weights, "reference": REFERENCE})


def open_fp8_checkpoint(resolved, settings: ModelSettings, device: str, dtype):
    """``(Fp8Checkpoint, settings)`` for a pre-quantized checkpoint, ``(None, settings)`` for any other, after
    :func:`~qrank.models.quantization.check_fp8_request` (before any weight is read).

    Like vLLM, the checkpoint's quantization wins: ``quantization='none'`` loads it in FP8 (said in the log);
    on a device without FP8 units the refusal names the checkpoint.

    >>> from qrank.models.base import ResolvedModel
    >>> plain = ResolvedModel("m", Path("."), "r", {"model_type": "qwen3"})
    >>> open_fp8_checkpoint(plain, ModelSettings(), "cpu", None)[0] is None
    True
    """
    from .quantization import check_fp8_request

    scheme = detect_fp8_checkpoint(resolved.config)
    if scheme is None:
        check_fp8_request(settings, device, dtype)
        return None, settings
    log.info("%s is a pre-quantized FP8 %s: loading it in FP8%s%s", resolved.name, scheme.source,
             " (quantization='none' does not dequantize it)" if settings.quantization == "none" else "",
             "; its blocks are requantized per output channel (a second rounding, measured by the gate against the "
             "dequantized weights)" if scheme.block else "")
    if settings.quantization == "none":
        settings = settings.model_copy(update={"quantization": "fp8"})
    try:  # the usual advice, quantization='none', would load this checkpoint in FP8 again
        check_fp8_request(settings, device, dtype, fix="load its bfloat16 original instead")
    except UnsupportedModel as exc:
        raise UnsupportedModel(f"{resolved.name} is a pre-quantized FP8 {scheme.source}, which runs only in FP8: "
                               f"{exc.message}", field=exc.field) from exc
    return Fp8Checkpoint(resolved.path, scheme), settings


def load_transformers_model(auto, resolved, checkpoint: Fp8Checkpoint | None, *, dtype, trust_remote_code: bool):
    """``auto.from_pretrained`` of the folder, or for a pre-quantized checkpoint :meth:`Fp8Checkpoint.load_model`
    (its projections dequantized: the gate's reference until :meth:`Fp8Checkpoint.gate` installs the FP8 ones)."""
    if checkpoint is not None:
        return checkpoint.load_model(auto, dtype=dtype, trust_remote_code=trust_remote_code)
    return auto.from_pretrained(str(resolved.path), dtype=dtype, trust_remote_code=trust_remote_code)


def _weight_files(path: Path) -> dict[str, Path]:
    """Tensor name → safetensors file, from ``model.safetensors.index.json`` or the one ``model.safetensors``."""
    from safetensors import safe_open

    index = path / "model.safetensors.index.json"
    if index.is_file():
        files = {k: path / f for k, f in json.loads(index.read_text(encoding="utf-8"))["weight_map"].items()}
        missing = sorted({f.name for f in files.values() if not f.is_file()})
        if missing:
            raise UnsupportedModel(f"{path}: model.safetensors.index.json names missing shards {missing}")
        return files
    single = path / "model.safetensors"
    if not single.is_file():
        raise UnsupportedModel(f"{path}: a pre-quantized FP8 checkpoint needs model.safetensors or its index")
    with safe_open(str(single), framework="pt") as f:
        return dict.fromkeys(f.keys(), single)


def _read(files: dict[str, Path], keys, *, meta: bool = False) -> dict:
    """The tensors ``keys``, each file opened once; ``meta``: their (dtype, shape) from the headers instead."""
    from safetensors import safe_open

    by_file, out = defaultdict(list), {}
    for k in keys:
        by_file[files[k]].append(k)
    for file, names in by_file.items():
        with safe_open(str(file), framework="pt") as f:
            absent = sorted(set(names) - set(f.keys()))
            if absent:
                raise UnsupportedModel(f"{file}: holds no {absent[0]} though the index says it does")
            for k in names:
                out[k] = (f.get_slice(k).get_dtype(), list(f.get_slice(k).get_shape())) if meta else f.get_tensor(k)
    return out

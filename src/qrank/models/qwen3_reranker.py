"""Qwen3-Reranker: the official chat template, scored by p("yes") against p("no") at the last position.

Loads the published causal-LM checkpoints (``Qwen3ForCausalLM``) and the converted
sequence-classification ones (``Qwen3ForSequenceClassification`` with one yes-minus-no logit); both
reduce to one weight vector ``w`` so the score is ``sigmoid(h_last . w)`` — equal to the softmax over
the two logits that the model card computes, without full-vocabulary logits.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from ..engine import pipelined_last_hidden
from ..errors import InvalidInput, UnsupportedModel
from ..settings import EngineSettings, ModelSettings
from ..types import ModelInfo
from .base import (
    DocumentLayout,
    Encoded,
    ResolvedModel,
    dtype_name,
    load_tokenizer,
    one_by_one,
    pick_device,
    pick_dtype,
    text_tokenizer,
)
from .fp8_checkpoints import load_transformers_model, open_fp8_checkpoint
from .quantization import gated_backend, revision_suffix

log = logging.getLogger(__name__)

SYSTEM_PROMPT = (
    'Judge whether the Document meets the requirements based on the Query and the Instruct provided. '
    'Note that the answer can only be "yes" or "no".'
)
PREFIX = f"<|im_start|>system\n{SYSTEM_PROMPT}<|im_end|>\n<|im_start|>user\n"
SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def format_user_turn(instruction: str, query: str, document: str) -> str:
    """The user turn of the official template.

    >>> format_user_turn("I", "q", "d")
    '<Instruct>: I\\n<Query>: q\\n<Document>: d'
    """
    return f"<Instruct>: {instruction}\n<Query>: {query}\n<Document>: {document}"


class Qwen3PromptEncoder:
    """Pre-processing only: pairs → token ids of the full template, truncating the document alone.

    Kept apart from the model so that engines, benchmarks and tests can build the exact inputs.
    """

    def __init__(self, tokenizer, max_length: int) -> None:
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.text_tok = text_tokenizer(tokenizer)
        self.prefix_ids = tokenizer.encode(PREFIX, add_special_tokens=False)
        self.suffix_ids = tokenizer.encode(SUFFIX, add_special_tokens=False)
        self.yes_id = _single_token_id(tokenizer, "yes")
        self.no_id = _single_token_id(tokenizer, "no")
        if max_length <= len(self.prefix_ids) + len(self.suffix_ids) + 8:
            raise InvalidInput("max_length", f"{max_length} leaves no room for the Qwen3 reranker template")

    def encode(self, pairs: Sequence[tuple[str, str]], instruction: str,
               max_length: int | None = None) -> list[list[int]]:
        """Token ids per pair: prefix + user turn (document truncated) + suffix, at most ``max_length`` tokens
        (default: the window; the server asks for one more when it refuses over-long pairs, to tell a pair that
        fills the window from a cut one). The query must fit the window itself either way."""
        fixed = len(self.prefix_ids) + len(self.suffix_ids)
        own = self.max_length - fixed
        budget = (max_length or self.max_length) - fixed
        texts = [format_user_turn(instruction, q, d) for q, d in pairs]
        # without offsets (a third less host time on rerank 1x100: bench/logs/r100_variants): only a pair over
        # the budget needs them, to find where its document starts, and it is encoded again with them
        encodings = self.text_tok.encode_batch_fast(texts, add_special_tokens=False)
        out = []
        for (_, doc), text, enc in zip(pairs, texts, encodings):
            ids = enc.ids
            if len(ids) > min(budget, own):
                enc = self.text_tok.encode(text, add_special_tokens=False)
                doc_start = len(text) - len(doc)
                head = sum(1 for start, _ in enc.offsets if start < doc_start)
                if head > own:
                    raise InvalidInput(
                        "query",
                        f"query and instruction take {head} tokens, more than max_length={self.max_length} "
                        "leaves for them; shorten the query or raise max_length",
                    )
                ids = ids[:budget]
            out.append(self.prefix_ids + ids + self.suffix_ids)
        return out

    def layouts(self, pairs: Sequence[tuple[str, str]], instruction: str) -> list[DocumentLayout]:
        """Where each document sits in its window, tokenized in context exactly as :meth:`encode` does.

        A token that straddles the document's start (the template's space glued to its first word) belongs
        to the document: cutting the document anywhere keeps the template and query whole.
        """
        fixed = len(self.prefix_ids) + len(self.suffix_ids)
        budget = self.max_length - fixed
        texts = [format_user_turn(instruction, q, d) for q, d in pairs]
        encodings = self.text_tok.encode_batch(texts, add_special_tokens=False)
        out = []
        for (query, doc), text, enc in zip(pairs, texts, encodings):
            doc_start = len(text) - len(doc)
            head = sum(1 for _, end in enc.offsets if end <= doc_start)
            offsets = tuple((max(s - doc_start, 0), e - doc_start) for s, e in enc.offsets[head:])
            # the query's tokens in context (no second tokenizing): those overlapping its characters
            q_end = doc_start - len("\n<Document>: ")
            q_tokens = sum(1 for s, e in enc.offsets if s < q_end and e > q_end - len(query))
            ids = enc.ids[:budget] if head <= budget else None  # what encode() gives, or its error
            encoded = Encoded(tuple(self.prefix_ids + ids + self.suffix_ids)) if ids is not None else None
            out.append(DocumentLayout(fixed + head, self.max_length, q_tokens, offsets, encoded))
        return out


def _single_token_id(tokenizer, token: str) -> int:
    tid = tokenizer.convert_tokens_to_ids(token)
    if tid is None or tid == tokenizer.unk_token_id:
        raise UnsupportedModel(f"the tokenizer has no single token {token!r}; not a Qwen3 reranker tokenizer")
    return int(tid)


class Qwen3Reranker:
    """A Qwen3-Reranker checkpoint (causal LM or converted sequence classifier).

    ``Qwen3Reranker.load(resolve_model("Qwen/Qwen3-Reranker-0.6B"), ModelSettings())`` loads the published
    checkpoint (a hub download, so no example runs it here); ``rr.score_pairs([("what is bm25?", "BM25 is a
    ranking function")])`` is then one float32 logit per pair. tests/numerics/test_qwen3_reranker.py checks a
    tiny random checkpoint with the real tokenizer against the official recipe.
    """

    kind = "qwen3-reranker"

    def __init__(self, model, tokenizer, info: ModelInfo, engine_settings: EngineSettings | None = None) -> None:
        import torch

        from ..engine import make_engine

        self.model = model.eval()
        self.tokenizer = tokenizer
        self.info = info
        engine_settings = engine_settings or EngineSettings()
        self.deterministic = engine_settings.deterministic  # one pair per pass and per sigmoid (one_by_one)
        self.encoder = Qwen3PromptEncoder(tokenizer, info.max_length)
        self.head = self._head_vector(model).to(torch.float32)
        pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else self.encoder.suffix_ids[-1]
        self.engine = make_engine(
            model.base_model, pad_id=pad_id, device=info.device, settings=engine_settings
        )
        self.info = replace(info, extra={**info.extra, "engine": self.engine.describe()})  # decided at load

    def _head_vector(self, model):
        """The one direction the score needs: w_yes - w_no, or the converted classifier's row."""
        import torch

        with torch.no_grad():
            score = getattr(model, "score", None)
            if score is not None and getattr(model.config, "num_labels", 1) == 1:
                return score.weight[0].detach().float().cpu()
            out = model.get_output_embeddings()
            if out is None:
                raise UnsupportedModel(f"{self.info.id}: has neither an LM head nor a one-label score head")
            w = out.weight
            return (w[self.encoder.yes_id].float() - w[self.encoder.no_id].float()).detach().cpu()

    @classmethod
    def load(cls, resolved: ResolvedModel, settings: ModelSettings, engine_settings: EngineSettings | None = None):
        from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

        device = pick_device(settings.device)
        dtype = pick_dtype(settings.dtype, device)
        # check_fp8_request, before minutes of loading weights; a pre-quantized FP8 checkpoint loads in FP8
        # whatever `quantization` says (docs/quantization.md)
        checkpoint, settings = open_fp8_checkpoint(resolved, settings, device, dtype)
        tokenizer = load_tokenizer(resolved.path, padding_side="left", trust_remote_code=settings.trust_remote_code)
        archs = resolved.config.get("architectures") or []
        auto = (
            AutoModelForSequenceClassification
            if any("SequenceClassification" in a for a in archs)
            else AutoModelForCausalLM
        )
        model = load_transformers_model(auto, resolved, checkpoint, dtype=dtype,
                                        trust_remote_code=settings.trust_remote_code)
        model.to(device)
        model_max = int(resolved.config.get("max_position_embeddings") or 32768)
        info = ModelInfo(
            id=resolved.name,
            kind=cls.kind + ("-seq-cls" if auto is AutoModelForSequenceClassification else ""),
            role="reranker",
            max_length=min(settings.max_length, model_max),
            dtype=dtype_name(dtype),
            device=str(device),
            # FP8 scores differ from bfloat16 ones: caches must not mix them
            revision=resolved.revision + revision_suffix(settings),
            default_instruction=settings.reranker_instruction or DEFAULT_INSTRUCTION,
            score_activation="sigmoid",
            extra={"architecture": archs[0] if archs else None},
        )
        return gated_backend(lambda: cls(model, tokenizer, info, engine_settings), model.base_model, settings,
                             checkpoint)

    def encode(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
               max_length: int | None = None) -> list[list[int]]:
        """Model-ready token ids per pair (the template with the instruction, the document truncated to fit
        ``max_length``, default the window: see :meth:`Qwen3PromptEncoder.encode`)."""
        return self.encoder.encode(pairs, instruction or self.info.default_instruction or DEFAULT_INSTRUCTION,
                                   max_length)

    def encode_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
                     max_length: int | None = None) -> list[Encoded]:
        return [Encoded(tuple(ids)) for ids in self.encode(pairs, instruction=instruction, max_length=max_length)]

    def count_tokens(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None,
                     max_length: int | None = None) -> list[int]:
        return [len(ids) for ids in self.encode(pairs, instruction=instruction, max_length=max_length)]

    def document_layouts(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None):
        """Per pair, the document's tokens and its budget in the window (see :class:`DocumentLayout`)."""
        return self.encoder.layouts(pairs, instruction or self.info.default_instruction or DEFAULT_INSTRUCTION)

    def _probabilities(self, hidden) -> np.ndarray:
        import torch

        return torch.sigmoid(hidden.to(torch.float32) @ self.head).numpy().astype(np.float32)

    def score_encoded(self, encoded: Sequence[Encoded]) -> np.ndarray:
        """Scores of already encoded pairs (the server tokenized them at its door)."""
        if not encoded:
            return np.zeros((0,), dtype=np.float32)
        if self.deterministic:
            return one_by_one(self._score_rows, list(encoded), np.zeros((0,), dtype=np.float32))
        return self._score_rows(encoded)

    def _score_rows(self, encoded: Sequence[Encoded]) -> np.ndarray:
        return self._probabilities(self.engine.last_hidden([list(e.ids) for e in encoded]))

    def score_pairs(self, pairs: Sequence[tuple[str, str]], *, instruction: str | None = None) -> np.ndarray:
        """``score_encoded(encode_pairs(pairs))``, with each chunk's tokenizing overlapping the GPU's work."""
        if not pairs:
            return np.zeros((0,), dtype=np.float32)
        if self.deterministic:  # one pair at a time: nothing to overlap
            return self.score_encoded(self.encode_pairs(pairs, instruction=instruction))
        hidden = pipelined_last_hidden(
            self.engine, list(pairs), lambda chunk: self.encode(chunk, instruction=instruction)
        )
        return self._probabilities(hidden)

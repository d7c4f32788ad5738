"""A collection's chunker cuts on the embedder's own tokens also when the embedder sits under layers.

Regression (found on a clean clone's demo, 2026-12-04): ``Pipeline`` wraps its embedder in ``CachedEmbedder``,
whose model is a cache layer; the chunker looked for ``model.tokenizer``, found none and cut by words, so
SciFact made 6,712 passages instead of 10,001 and passages ran past MiniLM's 256-token window.
"""

from __future__ import annotations

from transformers import AutoTokenizer

from qrank.cache import Cache, CachedEmbedder
from qrank.index.chunking import Chunker


def test_the_chunker_under_a_cache_layer_cuts_on_the_models_tokens(minilm, minilm_dir, tmp_path):
    cached = CachedEmbedder(minilm, Cache(tmp_path / "c.sqlite", max_bytes=10**8))
    chunker = Chunker(cached, chunk_tokens=512, overlap=0)
    assert chunker.tokenizer is not None
    plain = Chunker(minilm, chunk_tokens=512, overlap=0)
    text = " ".join(["Vitamin D deficiency is associated with respiratory infections in infants."] * 60)
    assert chunker.offsets([text]) == plain.offsets([text])
    reference = AutoTokenizer.from_pretrained(str(minilm_dir))
    window = chunker.max_tokens
    assert window == minilm.info.max_length - 2  # [CLS] and [SEP]
    for start, end in (pieces := [(s[0][0], s[-1][1]) for s in _windows(chunker.offsets([text])[0], window)]):
        assert len(reference(text[start:end], add_special_tokens=False)["input_ids"]) <= window
    assert len(pieces) > 1


def _windows(offsets, size):
    return [offsets[i : i + size] for i in range(0, len(offsets), size)]

"""Token-aware passages: cut long documents into overlapping windows the embedder can take whole.

Windows are measured with the embedder's own tokenizer (character offsets of its tokens), so a passage
never exceeds the model's input length; each passage is an exact slice of the document text (it ends
where the next token starts), so consecutive passages together give back the whole text.

>>> spans = chunk_spans("a b c d e", [(0, 1), (2, 3), (4, 5), (6, 7), (8, 9)], max_tokens=3, overlap=1)
>>> spans
[(0, 6, 3), (4, 9, 3)]
>>> ["a b c d e"[s:e] for s, e, _ in spans]
['a b c ', 'c d e']
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence

log = logging.getLogger(__name__)

_WORD = re.compile(r"\S+")


def chunk_spans(
    text: str, offsets: Sequence[tuple[int, int]], max_tokens: int, overlap: int
) -> list[tuple[int, int, int]]:
    """``(start, end, n_tokens)`` character spans of windows of at most ``max_tokens`` tokens that share
    about ``overlap`` tokens with their neighbour. Window edges move to the nearest word start (a token
    preceded by a gap) when one is close, so that passages do not begin or end inside a word. A text
    without tokens is one span of zero tokens."""
    if max_tokens < 1:
        raise ValueError("max_tokens must be >= 1")
    overlap = max(0, min(overlap, max_tokens - 1))
    n = len(offsets)
    if n == 0:
        return [(0, len(text), 0)]
    starts, ends = [], []
    last = 0
    for s, e in offsets:  # monotone offsets even if a tokenizer reports odd ones
        last = max(last, int(s))
        starts.append(last)
        ends.append(max(last, int(e)))

    def word_start(k: int) -> bool:
        return k == 0 or k == n or starts[k] > ends[k - 1]

    # how far an edge may move to find a word start: a word is rarely over 16 tokens, and a quarter of the
    # passage keeps short passages from shrinking much
    reach = max(1, min(16, max_tokens // 4))
    spans = []
    i = 0
    while True:
        j = min(i + max_tokens, n)
        for jj in range(j, max(i, j - reach), -1):  # end earlier rather than split a word
            if word_start(jj):
                j = jj
                break
        spans.append((0 if i == 0 else starts[i], len(text) if j == n else starts[j], j - i))
        if j == n:
            return spans
        nxt = max(j - overlap, i + 1)
        # start earlier (a little more overlap) at a word start, else later (a little less) rather than inside a
        # word: near the previous start there may be no earlier word start that still moves forward
        earlier = range(nxt, max(i, nxt - reach), -1)
        later = range(nxt + 1, min(j, nxt + reach))
        i = next((k for k in (*earlier, *later) if word_start(k)), nxt)


class Chunker:
    """Splits texts into passages sized for one embedder.

    The window is ``min(chunk_tokens, model max length - special tokens)``; ``overlap`` is capped at half
    a window. Without a Hugging Face fast tokenizer (remote or fake embedders) whitespace-separated words
    stand in for tokens.

    >>> class _Info: max_length = 6
    >>> class _Em: info = _Info(); model = None
    >>> Chunker(_Em(), chunk_tokens=512, overlap=2).split(["one two three four five six seven eight"])[0]
    [(0, 28, 6), (19, 39, 4)]
    """

    def __init__(self, embedder, chunk_tokens: int, overlap: int) -> None:
        model = getattr(embedder, "model", None)
        self.tokenizer = getattr(model, "tokenizer", None)
        specials = 0
        if hasattr(model, "count_tokens"):
            try:
                specials = int(model.count_tokens([""])[0])
            except Exception as exc:  # a backend whose count_tokens rejects "" still chunks; log why
                log.debug("count_tokens(['']) failed (%s); assuming no special tokens", exc)
        limit = int(getattr(embedder.info, "max_length", chunk_tokens) or chunk_tokens) - specials
        self.specials = specials
        self.max_tokens = max(1, min(int(chunk_tokens), limit))
        self.overlap = max(0, min(int(overlap), self.max_tokens // 2))

    def offsets(self, texts: Sequence[str]) -> list[list[tuple[int, int]]]:
        """Character offsets of each text's tokens (no special tokens, no truncation)."""
        if self.tokenizer is not None:
            try:
                enc = self.tokenizer(list(texts), add_special_tokens=False, return_offsets_mapping=True,
                                     truncation=False, verbose=False)
                return [list(map(tuple, o)) for o in enc["offset_mapping"]]
            except (TypeError, ValueError, NotImplementedError, KeyError) as exc:
                log.warning("tokenizer gives no offsets (%s); chunking by words instead", exc)
                self.tokenizer = None
        return [[m.span() for m in _WORD.finditer(t)] for t in texts]

    def split(self, texts: Sequence[str]) -> list[list[tuple[int, int, int]]]:
        """Per text, its passages as ``(start, end, n_tokens)``."""
        return [chunk_spans(t, offs, self.max_tokens, self.overlap) for t, offs in zip(texts, self.offsets(texts))]

"""The 59aea02 chunking (a characters-per-token estimate), kept only for bench/r100_probe.py's A/B.

Overlap tokenizing with the GPU: cut a request into chunks, submit each as soon as it is encoded.

A request is tokenized chunk by chunk; each chunk's forward passes are queued on the device
(``engine.submit``) before the next chunk is tokenized, so the host works while the GPU does. Two things
decide how long the GPU waits:

* the first chunk is small (the GPU idles until it is ready) and each next one ``growth`` times bigger, up
  to the engine's pass budget, so the host always has the next chunk ready before the GPU runs dry (an
  engine can ask for a big first chunk, ``first_chunk_tokens``: a big model loses more to small passes
  than it gains from starting a few milliseconds sooner);
* chunk sizes are estimated from characters, and the ratio of characters to *computed* tokens (a
  shared query prefix counts once) is learned from every chunk already encoded, so a full-size chunk
  fills about one pass: guessing the ratio wrong either wastes passes on small pieces or splits a
  chunk into a full pass plus a remnant.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence  # noqa: I001

# characters per token before anything was measured (English prose through a BPE tokenizer: ~4-5)
INITIAL_CHARS_PER_TOKEN = 4.0


def item_chars(item) -> int:
    """Characters of an item: a text, or a tuple of texts (a query-document pair)."""
    return sum(len(x) for x in item) if isinstance(item, tuple) else len(item)


class ChunkSizer:
    """Chooses where the next chunk of items ends.

    >>> s = ChunkSizer(target_tokens=1000, first_tokens=250, growth=2.0)
    >>> s.next_end([100] * 40, 0)      # 250 tokens x 4 chars/token = 1000 chars = 10 items
    10
    >>> s.observe(chars=1000, tokens=500)  # 2 chars a token in fact: the next 500-token chunk is 1000 chars
    >>> s.next_end([100] * 40, 10)
    20
    """

    def __init__(self, target_tokens: int, first_tokens: int | None = None, growth: float = 2.0,
                 fill: float = 0.9) -> None:
        if target_tokens < 1 or growth < 1.0 or not 0 < fill <= 1:
            raise ValueError("target_tokens >= 1, growth >= 1 and 0 < fill <= 1 are required")
        self.target = max(int(target_tokens * fill), 1)  # a little under the budget: no remnant passes
        self.want = min(first_tokens or max(self.target // 8, 256), self.target)
        self.growth = growth
        self.chars = 0
        self.tokens = 0

    @property
    def chars_per_token(self) -> float:
        return self.chars / self.tokens if self.tokens else INITIAL_CHARS_PER_TOKEN

    def observe(self, chars: int, tokens: int) -> None:
        """Record what a chunk of ``chars`` characters cost in computed tokens."""
        self.chars += chars
        self.tokens += tokens

    def next_end(self, sizes: Sequence[int], start: int) -> int:
        """End (exclusive) of the chunk that starts at ``start``; at least one item, then grow the next."""
        limit = self.want * self.chars_per_token
        end, total = start + 1, sizes[start]
        while end < len(sizes) and total + sizes[end] <= limit:
            total += sizes[end]
            end += 1
        self.want = min(int(self.want * self.growth), self.target)
        return end


def pipelined_last_hidden(engine, items: Sequence, encode: Callable[[Sequence], list], *,
                          chunk_tokens: int | None = None, first_tokens: int | None = None,
                          overlap: bool | None = None):
    """``engine.last_hidden(encode(items))``, but on a GPU the tokenizing of each chunk of ``items``
    overlaps the forward passes of the chunks before it.

    ``engine.submit(seqs)`` returns a pending result with ``computed_tokens`` and ``result()``
    (:class:`~qrank.engine.fast.Pending`). ``overlap``: None chunks on CUDA only (a CPU gains nothing: the
    host *is* the device); engines without ``submit`` (the reference path) and single items always take
    everything at once.

    >>> import torch
    >>> class Echo:  # an engine whose "hidden state" is the sequence length
    ...     def last_hidden(self, seqs): return torch.tensor([[float(len(s))] for s in seqs])
    >>> pipelined_last_hidden(Echo(), ["ab", "c"], lambda xs: [list(x) for x in xs]).flatten().tolist()
    [2.0, 1.0]
    """
    import torch

    submit = getattr(engine, "submit", None)
    device = getattr(engine, "device", None)
    if overlap is None:
        overlap = getattr(device, "type", "cpu") == "cuda"
    if submit is None or not overlap or len(items) < 2:
        return engine.last_hidden(encode(items))
    first = first_tokens or getattr(engine, "first_chunk_tokens", None)
    sizer = ChunkSizer(chunk_tokens or engine.max_batch_tokens, first)
    sizes = [item_chars(x) for x in items]
    pending, start = [], 0
    while start < len(items):
        end = sizer.next_end(sizes, start)
        seqs = encode(items[start:end])
        p = submit(seqs)  # returns at once: the GPU works while the next chunk encodes
        sizer.observe(sum(sizes[start:end]), max(p.computed_tokens, 1))
        pending.append(p)
        start = end
    return torch.cat([p.result() for p in pending])

"""The tokenizer thread of the pipelined path: errors reach the caller, nothing is left encoding."""

from __future__ import annotations

import threading

import pytest
import torch

from qrank.engine.pipelining import pipelined_last_hidden, slab_bounds


class _Engine:
    """An engine whose hidden state is a sequence's length; a pass is one submit."""

    max_batch_tokens, first_chunk_tokens = 8, 2

    def __init__(self) -> None:
        self.submitted = []

    def computed_tokens(self, seqs):
        return sum(len(s) for s in seqs)

    def submit(self, seqs):
        self.submitted.append(list(seqs))
        out = torch.tensor([[float(len(s))] for s in seqs])
        return type("Done", (), {"result": lambda self: out})()


def test_slab_bounds_cover_every_item_once():
    for n in (1, 7, 8, 9, 16, 17, 100, 1000):
        bounds = slab_bounds(n)
        assert [i for a, b in bounds for i in range(a, b)] == list(range(n))
        assert all(b - a <= max(8, 2 ** k * 8) for k, (a, b) in enumerate(bounds))


def test_order_and_every_item_once():
    items = [("x" * (1 + i % 5)) for i in range(40)]
    seen = []

    def encode(xs):
        seen.extend(xs)
        return [list(x) for x in xs]

    engine = _Engine()
    out = pipelined_last_hidden(engine, items, encode, overlap=True)
    assert out.flatten().tolist() == [float(len(x)) for x in items]
    assert seen == items
    assert len(engine.submitted) > 2  # really chunked


def test_an_encoding_error_reaches_the_caller_and_stops_the_thread():
    calls = []

    def encode(xs):
        calls.append(len(xs))
        if len(calls) == 2:
            raise ValueError("bad item")
        return [list(x) for x in xs]

    before = threading.active_count()
    with pytest.raises(ValueError, match="bad item"):
        pipelined_last_hidden(_Engine(), ["ab"] * 100, encode, overlap=True)
    assert threading.active_count() == before  # the tokenizer thread is gone

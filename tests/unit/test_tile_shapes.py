"""The Triton kernel's tile shape is chosen per pass by the longest row's keys, and CUDA graphs key on it."""

from __future__ import annotations

import pytest

from qrank.engine import attention
from qrank.engine.attention import TileShape, TritonAttention
from qrank.engine.packing import build_layout

pytest.importorskip("triton", reason="Triton comes with the test extra")  # static_parts builds the tile table


@pytest.fixture
def long_shape(monkeypatch):
    shape = TileShape(128, 64, 8, 2)
    monkeypatch.setattr(TritonAttention, "long", shape)
    monkeypatch.setattr(attention, "LONG_ROW_KEYS", 100)
    return shape


def _layout(prefix: int, own: list[int]):
    seqs = [[1] * prefix + [2 + i] * n for i, n in enumerate(own)]
    return build_layout(seqs, [(prefix, list(range(len(own))))])


def test_short_rows_take_the_short_shape_and_a_long_row_the_long_one(long_shape):
    assert TritonAttention.tile_shape(_layout(20, [30, 40])) == TritonAttention.short
    # 20 prefix keys + 80 own keys reach 100: the whole pass takes the long shape
    assert TritonAttention.tile_shape(_layout(20, [30, 80])) == long_shape
    assert "rows >= 100 keys: 128x64/8w2s" in TritonAttention.describe()


def test_graph_shapes_differ_by_tile_shape_and_tiles_follow_its_block(long_shape):
    short_dims, short_parts = TritonAttention.static_parts(_layout(20, [30, 40]), group=2)
    long_dims, long_parts = TritonAttention.static_parts(_layout(20, [30, 80]), group=2)
    assert short_dims[1] == 0 and long_dims[1] == 1
    # 128 rows / 2 heads = 64 tokens a tile: prefix row 0..19, members 20..49 and 50..129 (2 tiles)
    q0 = long_parts[0][0].reshape(5, -1)[0]
    assert q0[:5].tolist() == [0, 20, 50, 50 + 64, 0]
    # the short shape: 64 rows / 2 heads = 32 tokens a tile (members 20..49 and 50..89: 2 tiles)
    assert short_parts[0][0].reshape(5, -1)[0][:4].tolist() == [0, 20, 50, 82]


def test_one_shape_for_all_rows_describes_as_one(monkeypatch):
    monkeypatch.setattr(TritonAttention, "long", TritonAttention.short)
    assert TritonAttention.describe() == str(TritonAttention.short) == "64x32/4w2s"

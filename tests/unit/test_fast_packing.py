"""Prefix groups, pass planning and packed layouts of the fast engine, checked against the sequences."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from qrank.engine.packing import bucket_plan, build_layout, key_index, plan_passes, varlen_plan
from qrank.engine.prefix import PrefixGroup, common_prefix_len, find_prefix_groups

# sequences over a tiny alphabet built from a few shared stems, so prefixes collide often
stems = st.lists(st.integers(0, 3), min_size=0, max_size=20)
sequences = st.lists(
    st.tuples(st.integers(0, 2), st.lists(st.integers(0, 3), min_size=0, max_size=15)), min_size=1, max_size=25
)


def _build(stem_list, items):
    out = [stem_list[s % len(stem_list)] + tail for s, tail in items]
    return [s if s else [1] for s in out]


@settings(max_examples=150, deadline=None)
@given(st.lists(stems, min_size=1, max_size=3), sequences, st.integers(1, 12))
def test_groups_partition_and_really_share_their_prefix(stem_list, items, min_prefix):
    seqs = _build(stem_list, items)
    groups = find_prefix_groups(seqs, min_prefix=min_prefix)
    assert sorted(i for g in groups for i in g.members) == list(range(len(seqs)))
    for g in groups:
        assert g.prefix_len == 0 or g.prefix_len >= min_prefix
        head = seqs[g.members[0]][: g.prefix_len]
        for m in g.members:
            assert seqs[m][: g.prefix_len] == head
            assert len(seqs[m]) > g.prefix_len  # every member keeps its last token to compute


def test_groups_follow_queries_not_the_template():
    template, q1, q2 = list(range(100, 150)), list(range(7, 37)), list(range(40, 70))
    docs = [[1, 2, 3], [1, 2, 9, 9], [5], [1, 4]]  # two start alike: must not split a query's group
    seqs = [template + q1 + d for d in docs] + [template + q2 + d for d in docs]
    groups = find_prefix_groups(seqs)
    assert sorted((g.prefix_len, sorted(g.members)) for g in groups) == [(80, [0, 1, 2, 3]), (80, [4, 5, 6, 7])]


def test_unrelated_sequences_share_nothing():
    groups = find_prefix_groups([[1, 2, 3], [4, 5], [1, 9], [6]])
    assert groups == [PrefixGroup(0, (0, 1, 2, 3))]
    assert common_prefix_len([], [1]) == 0


@settings(max_examples=150, deadline=None)
@given(st.lists(stems, min_size=1, max_size=3), sequences, st.integers(1, 80), st.integers(1, 6), st.integers(4, 64))
def test_passes_and_layouts_rebuild_every_sequence(stem_list, items, budget, max_bs, bucket_tokens):
    seqs = _build(stem_list, items)
    lengths = [len(s) for s in seqs]
    groups = find_prefix_groups(seqs, min_prefix=2)
    passes = plan_passes(groups, lengths, budget, max_bs)
    seen = []
    for plan in passes:
        lay = build_layout(seqs, plan)
        computed = sum(p + sum(lengths[i] - p for i in members) for p, members in plan)
        assert lay.num_tokens == computed
        assert computed <= budget or len(lay.members) == 1
        assert len(lay.members) <= max_bs
        keys = key_index(lay)
        starts = np.concatenate([[0], np.cumsum(lay.k_len)])
        # every member's keys are its whole sequence, in order, at positions 0..len-1
        for m, last in zip(lay.members, lay.last_index):
            row = int(np.flatnonzero(lay.q_start + lay.q_len - 1 == last)[0])
            k = keys[starts[row] : starts[row + 1]]
            assert lay.input_ids[k].tolist() == seqs[m]
            assert lay.positions[k].tolist() == list(range(len(seqs[m])))
        # varlen: queries are exactly the packed tokens, in order
        vp = varlen_plan(lay)
        assert vp.cu_q[-1] == lay.num_tokens and vp.cu_k[-1] == int(lay.k_len.sum())
        # buckets: each packed token is a query once; key slots hold the row's keys in order
        qs = []
        for b in bucket_plan(lay, bucket_tokens):
            assert b.kv_dst.max() < b.b * b.length
            qs.extend(b.q_src.tolist())
            assert set(b.q_dst.tolist()) <= set(b.kv_dst.tolist())
            slot_to_src = dict(zip(b.kv_dst.tolist(), b.kv_src.tolist()))
            assert all(slot_to_src[d] == s for d, s in zip(b.q_dst.tolist(), b.q_src.tolist()))
        assert sorted(qs) == list(range(lay.num_tokens))
        seen.extend(lay.members)
    assert sorted(seen) == list(range(len(seqs)))

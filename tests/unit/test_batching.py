"""Token-budget batching: every input once, budgets respected, order restorable."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from qrank.engine.batching import plan_batches, restore_order


@given(
    lengths=st.lists(st.integers(min_value=0, max_value=300), max_size=60),
    budget=st.integers(min_value=1, max_value=2000),
    max_bs=st.integers(min_value=1, max_value=16),
)
def test_plan_batches_covers_each_input_once_within_budget(lengths, budget, max_bs):
    batches = plan_batches(lengths, budget, max_bs)
    flat = sorted(i for b in batches for i in b)
    assert flat == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_bs
        padded = max(max(lengths[i], 1) for i in b) * len(b)
        assert padded <= budget or len(b) == 1
    results = [[lengths[i] * 10 for i in b] for b in batches]
    assert restore_order(batches, results, len(lengths)) == [x * 10 for x in lengths]


def test_longest_inputs_come_first():
    assert plan_batches([1, 9, 5], max_tokens=100) == [[1, 2, 0]]

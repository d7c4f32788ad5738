"""Pack token sequences into padding-free forward passes under a token budget.

A pass is one flat run of tokens. Each prefix group present in the pass contributes its shared prefix
once, then each member's own tokens; an *attention row* is either a prefix (it attends to itself) or a
member (it attends to its group's prefix, then causally to its own tokens). Positions restart at 0 for
every prefix and continue after it for its members, exactly as if each sequence ran alone.

Everything here is host-side numpy; the engine turns a :class:`PassLayout` into device tensors.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .batching import plan_batches
from .prefix import PrefixGroup


@dataclass
class PassLayout:
    """One forward pass, flattened. Row arrays are in packed order (row r's queries start at q_start[r])."""

    input_ids: np.ndarray  # (T,) int64
    positions: np.ndarray  # (T,) int64
    q_start: np.ndarray  # (R,) first packed token of each attention row
    q_len: np.ndarray  # (R,) tokens the row computes
    p_start: np.ndarray  # (R,) packed start of the prefix the row attends to (unused when p_len == 0)
    p_len: np.ndarray  # (R,) prefix tokens the row attends to before its own
    last_index: np.ndarray  # (n,) packed index of each member's last token
    members: list[int]  # caller positions, aligned with last_index

    @property
    def num_tokens(self) -> int:
        return int(self.input_ids.shape[0])

    @property
    def k_len(self) -> np.ndarray:
        return self.p_len + self.q_len


def plan_passes(
    groups: Sequence[PrefixGroup], lengths: Sequence[int], max_tokens: int, max_batch_size: int
) -> list[list[tuple[int, list[int]]]]:
    """Cut groups into passes of at most ``max_tokens`` computed tokens and ``max_batch_size`` members.

    A pass is a list of ``(prefix_len, members)``; a group split over several passes repeats its
    prefix in each (a prefix is short next to the documents). Members go longest first so that passes
    hold similar lengths. A single sequence over the budget gets a pass of its own.

    >>> from qrank.engine.prefix import PrefixGroup
    >>> plan_passes([PrefixGroup(4, (0, 1, 2))], [10, 6, 8], max_tokens=12, max_batch_size=8)
    [[(4, [0])], [(4, [2, 1])]]
    """
    passes: list[list[tuple[int, list[int]]]] = []
    current: list[tuple[int, list[int]]] = []
    used = count = 0
    for g in groups:
        members = sorted(g.members, key=lambda i: (-lengths[i], i))
        open_group: list[int] | None = None
        for i in members:
            own = lengths[i] - g.prefix_len
            cost = own + (g.prefix_len if open_group is None else 0)
            if current and (used + cost > max_tokens or count >= max_batch_size):
                passes.append(current)
                current, used, count, open_group = [], 0, 0, None
                cost = own + g.prefix_len
            if open_group is None:
                open_group = []
                current.append((g.prefix_len, open_group))
            open_group.append(i)
            used += cost
            count += 1
    if current:
        passes.append(current)
    return passes


def build_layout(sequences: Sequence[Sequence[int]], plan: Sequence[tuple[int, Sequence[int]]]) -> PassLayout:
    """Flatten one planned pass into token ids, positions and attention rows."""
    ids: list[np.ndarray] = []
    pos: list[np.ndarray] = []
    q_start, q_len, p_start, p_len, last, members = [], [], [], [], [], []
    at = 0
    for prefix_len, group in plan:
        pstart = at
        if prefix_len:
            ids.append(np.asarray(sequences[group[0]][:prefix_len], dtype=np.int64))
            pos.append(np.arange(prefix_len, dtype=np.int64))
            q_start.append(at), q_len.append(prefix_len), p_start.append(0), p_len.append(0)
            at += prefix_len
        for i in group:
            seq = sequences[i]
            own = len(seq) - prefix_len
            ids.append(np.asarray(seq[prefix_len:], dtype=np.int64))
            pos.append(np.arange(prefix_len, len(seq), dtype=np.int64))
            q_start.append(at), q_len.append(own), p_start.append(pstart), p_len.append(prefix_len)
            at += own
            last.append(at - 1)
            members.append(i)
    as_arr = lambda x: np.asarray(x, dtype=np.int64)  # noqa: E731
    return PassLayout(
        input_ids=np.concatenate(ids) if ids else np.zeros(0, np.int64),
        positions=np.concatenate(pos) if pos else np.zeros(0, np.int64),
        q_start=as_arr(q_start),
        q_len=as_arr(q_len),
        p_start=as_arr(p_start),
        p_len=as_arr(p_len),
        last_index=as_arr(last),
        members=members,
    )


def key_index(layout: PassLayout, rows: np.ndarray | None = None) -> np.ndarray:
    """Packed token index of every key of every row (prefix first, then own), rows concatenated.

    >>> lay = build_layout([[1, 2, 3], [1, 2, 4, 5]], [(2, [0, 1])])
    >>> key_index(lay).tolist()   # prefix row [0,1]; member 0 [0,1,2]; member 1 [0,1,3,4]
    [0, 1, 0, 1, 2, 0, 1, 3, 4]
    """
    rows = np.arange(len(layout.q_len)) if rows is None else rows
    k_len = layout.k_len[rows]
    row_of = np.repeat(np.arange(len(rows)), k_len)
    starts = np.concatenate([[0], np.cumsum(k_len)[:-1]]).astype(np.int64)
    j = np.arange(int(k_len.sum()), dtype=np.int64) - np.repeat(starts, k_len)
    p = layout.p_len[rows][row_of]
    return np.where(j < p, layout.p_start[rows][row_of] + j, layout.q_start[rows][row_of] + j - p)


def ladder(x: int, floor: int = 256) -> int:
    """Smallest m * 2**k >= x with 8 <= m <= 15 (and >= floor).

    8..15 bounds the padding by 12.5% with ~8 sizes per doubling (few CUDA graphs); the 256-token floor
    gives every small pass one shape (such a pass costs its launches, not its tokens).

    >>> [ladder(n) for n in (1, 300, 1025, 16250, 16384)]
    [256, 320, 1152, 16384, 16384]
    """
    x = max(int(x), floor)
    k = max(x.bit_length() - 4, 0)
    m = -(-x // (1 << k))
    return m << k


def pow2(x: int) -> int:
    """
    >>> [pow2(n) for n in (1, 3, 64, 65)]
    [1, 4, 64, 128]
    """
    return 1 << max(int(x) - 1, 0).bit_length()


@dataclass
class VarlenPlan:
    """Inputs of a variable-length attention kernel over a whole pass."""

    cu_q: np.ndarray  # (R+1,) int32
    cu_k: np.ndarray  # (R+1,) int32
    max_q: int
    max_k: int
    k_index: np.ndarray | None  # (sum k_len,) gather index; None when no row has a prefix


def varlen_plan(layout: PassLayout) -> VarlenPlan:
    """Cumulative lengths for queries (own tokens) and keys (prefix + own), bottom-right causal."""
    cu_q = np.concatenate([[0], np.cumsum(layout.q_len)]).astype(np.int32)
    k_len = layout.k_len
    cu_k = np.concatenate([[0], np.cumsum(k_len)]).astype(np.int32)
    has_prefix = bool((layout.p_len > 0).any())
    return VarlenPlan(
        cu_q=cu_q,
        cu_k=cu_k,
        max_q=int(layout.q_len.max()),
        max_k=int(k_len.max()),
        k_index=key_index(layout) if has_prefix else None,
    )


@dataclass
class Bucket:
    """Rows of similar length attended together as one right-padded (b, L) batch.

    Slot ``s`` of the flat (b * L) layout holds key ``kv_src`` for ``kv_dst``; queries sit in the same
    slots as their own keys, so plain top-left causal attention over equal-length rows is exact and
    the padding (after each row's end) is never seen by a real query.
    """

    b: int
    length: int
    kv_dst: np.ndarray
    kv_src: np.ndarray
    q_dst: np.ndarray
    q_src: np.ndarray


def bucket_plan(layout: PassLayout, max_tokens: int) -> list[Bucket]:
    """Group rows by total length into padded batches of at most ``max_tokens`` slots each."""
    k_len = layout.k_len
    buckets = []
    for rows in plan_batches(k_len.tolist(), max_tokens):
        rows = np.asarray(rows, dtype=np.int64)
        kl = k_len[rows]
        length = int(kl.max())
        src = key_index(layout, rows)
        row_of = np.repeat(np.arange(len(rows)), kl)
        starts = np.concatenate([[0], np.cumsum(kl)[:-1]]).astype(np.int64)
        j = np.arange(int(kl.sum()), dtype=np.int64) - np.repeat(starts, kl)
        dst = row_of * length + j
        is_q = j >= layout.p_len[rows][row_of]
        buckets.append(Bucket(len(rows), length, dst, src, dst[is_q], src[is_q]))
    return buckets

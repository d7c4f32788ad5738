"""The plain path: left-padded batches through a Hugging Face decoder body.

It follows the official recipes (left padding, take the last position) and is the yardstick the fast
GPU engine is tested against. It never computes vocabulary logits: callers apply their own head to
the returned hidden states.
"""

from __future__ import annotations

from collections.abc import Sequence

from .batching import plan_batches, restore_order


class ReferenceEngine:
    """Run token sequences through ``body`` (e.g. ``Qwen3Model``) and return each last hidden state.

    >>> from transformers import Qwen3Config, Qwen3Model
    >>> body = Qwen3Model(Qwen3Config(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
    ...                               num_attention_heads=4, num_key_value_heads=2, head_dim=8)).eval()
    >>> engine = ReferenceEngine(body, pad_id=0, max_batch_tokens=64)
    >>> engine.last_hidden([[1, 2, 3], [4, 5]]).shape
    torch.Size([2, 32])
    """

    name = "reference"

    def __init__(self, body, *, pad_id: int, max_batch_tokens: int = 16384,
                 max_batch_size: int = 256) -> None:  # defaults: EngineSettings'
        self.body = body
        self.pad_id = int(pad_id)
        self.max_batch_tokens = max_batch_tokens
        self.max_batch_size = max_batch_size

    @property
    def device(self):
        return next(self.body.parameters()).device

    def describe(self) -> dict:
        """What runs, as a plain dict (``ModelInfo.extra["engine"]``); nothing here is decided at run time."""
        return {"engine": self.name, "max_batch_tokens": self.max_batch_tokens, "max_batch_size": self.max_batch_size,
                "device": str(self.device)}

    def last_hidden(self, sequences: Sequence[Sequence[int]]):
        """float32 tensor (len(sequences), hidden) on the CPU, in the caller's order."""
        import torch

        if not sequences:
            return torch.zeros((0, self.body.config.hidden_size), dtype=torch.float32)
        lengths = [len(s) for s in sequences]
        batches = plan_batches(lengths, self.max_batch_tokens, self.max_batch_size)
        outs = []
        with torch.inference_mode():
            for idx in batches:
                longest = max(lengths[i] for i in idx)
                ids = torch.full((len(idx), longest), self.pad_id, dtype=torch.long)
                mask = torch.zeros((len(idx), longest), dtype=torch.long)
                for row, i in enumerate(idx):
                    seq = sequences[i]
                    ids[row, longest - len(seq):] = torch.as_tensor(seq, dtype=torch.long)
                    mask[row, longest - len(seq):] = 1
                out = self.body(input_ids=ids.to(self.device), attention_mask=mask.to(self.device))
                outs.append(out.last_hidden_state[:, -1].float().cpu())
        rows = restore_order(batches, [list(o) for o in outs], len(sequences))
        return torch.stack(rows)

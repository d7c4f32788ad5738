"""Independent references: the model cards' official recipes, written with plain transformers.

Nothing here imports qrank, so a mistake in qrank's template, truncation or padding cannot hide in
both sides of a comparison.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

RERANKER_PREFIX = (
    "<|im_start|>system\nJudge whether the Document meets the requirements based on the Query and the "
    'Instruct provided. Note that the answer can only be "yes" or "no".<|im_end|>\n<|im_start|>user\n'
)
RERANKER_SUFFIX = "<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n"
DEFAULT_INSTRUCTION = "Given a web search query, retrieve relevant passages that answer the query"


def official_qwen3_rerank(model_dir, pairs, instruction=None, max_length=8192, batch_size=8):
    """Qwen3-Reranker model card recipe (AutoModelForCausalLM, left padding, softmax over yes/no)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    token_false_id = tokenizer.convert_tokens_to_ids("no")
    token_true_id = tokenizer.convert_tokens_to_ids("yes")
    prefix_tokens = tokenizer.encode(RERANKER_PREFIX, add_special_tokens=False)
    suffix_tokens = tokenizer.encode(RERANKER_SUFFIX, add_special_tokens=False)
    instruction = instruction or DEFAULT_INSTRUCTION
    texts = [f"<Instruct>: {instruction}\n<Query>: {q}\n<Document>: {d}" for q, d in pairs]
    scores = []
    for start in range(0, len(texts), batch_size):
        chunk = texts[start : start + batch_size]
        inputs = tokenizer(
            chunk,
            padding=False,
            truncation="longest_first",
            return_attention_mask=False,
            max_length=max_length - len(prefix_tokens) - len(suffix_tokens),
        )
        for i, ele in enumerate(inputs["input_ids"]):
            inputs["input_ids"][i] = prefix_tokens + ele + suffix_tokens
        inputs = tokenizer.pad(inputs, padding=True, return_tensors="pt", max_length=max_length)
        with torch.no_grad():
            batch_scores = model(**inputs).logits[:, -1, :]
        stacked = torch.stack([batch_scores[:, token_false_id], batch_scores[:, token_true_id]], dim=1)
        scores.extend(F.log_softmax(stacked, dim=1)[:, 1].exp().tolist())
    return scores


def official_qwen3_embed(model_dir, texts, *, is_query=False, task=None, max_length=8192):
    """Qwen3-Embedding model card recipe (AutoModel, left padding, last-token pool, L2 norm)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir, padding_side="left")
    model = AutoModel.from_pretrained(model_dir, dtype=torch.float32).eval()
    if is_query:
        task = task or DEFAULT_INSTRUCTION
        texts = [f"Instruct: {task}\nQuery:{q}" for q in texts]
    batch = tokenizer(texts, padding=True, truncation=True, max_length=max_length, return_tensors="pt")
    with torch.no_grad():
        out = model(**batch).last_hidden_state
    mask = batch["attention_mask"]
    left_padding = bool(mask[:, -1].sum() == mask.shape[0])
    if left_padding:
        pooled = out[:, -1]
    else:
        lengths = mask.sum(dim=1) - 1
        pooled = out[torch.arange(out.shape[0]), lengths]
    return F.normalize(pooled, p=2, dim=1).numpy()

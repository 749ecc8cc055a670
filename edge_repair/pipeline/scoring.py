"""Constrained choices by label log-probability: the model scores a closed set of continuations.

A small model's free text is unreliable; the log-probability it gives each allowed label after a
prompt is always well-formed, so every model decision in the pipeline is made this way.
"""

import mlx.core as mx

from edge_repair.engine.capture import logits_only_at, pad_batch, prefix_cache, repeat_cache
from edge_repair.generation import prompt_tokens


def label_logprobs(patient, messages: list[dict], labels: list[str]) -> list[float]:
    """Total log-prob of each label as the start of the assistant's reply, in one batched pass.

    The prompt runs once (its KV cache is shared by every label) and logits are computed only
    where they score a label token: measured ~0.7 s → ~0.2 s for three labels after an 80-token
    prompt on the default model. Rows are right-padded (causal: padding never reaches a label).
    """
    prefix = prompt_tokens(patient, messages)
    label_ids = [patient.tokenizer.encode(label, add_special_tokens=False) for label in labels]
    sequences = [prefix + ids for ids in label_ids]
    n, cache = prefix_cache(patient.model, sequences, limit=len(prefix) - 1)
    rows = [s[n:] for s in sequences]
    width = max(len(ids) for ids in label_ids)
    start = len(prefix) - 1 - n  # the position that predicts a label's first token
    positions = mx.array([[start + min(i, len(ids) - 1) for i in range(width)] for ids in label_ids])
    with logits_only_at(patient.model, positions):
        logits = patient.model(pad_batch(rows), cache=repeat_cache(cache, len(rows)) if cache else None)
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return [float(mx.sum(logprobs[row, mx.arange(len(ids)), mx.array(ids)])) for row, ids in enumerate(label_ids)]


def choose(patient, messages: list[dict], options: dict[str, str]) -> tuple[str, dict[str, float]]:
    """Pick the option key whose label text the model finds most likely; also return the scores."""
    keys = list(options)
    scores = label_logprobs(patient, messages, [options[k] for k in keys])
    table = dict(zip(keys, scores))
    return max(table, key=table.get), table

"""Constrained choices by label log-probability: the model scores a closed set of continuations.

A small model's free text is unreliable; the log-probability it gives each allowed label after a
prompt is always well-formed, so every model decision in the pipeline is made this way.
"""

import mlx.core as mx

from edge_repair.generation import prompt_tokens


def label_logprobs(patient, messages: list[dict], labels: list[str]) -> list[float]:
    """Total log-prob of each label as the start of the assistant's reply, in one batched pass.

    Sequences are right-padded: with a causal mask, padding never influences earlier positions.
    """
    prefix = prompt_tokens(patient, messages)
    label_ids = [patient.tokenizer.encode(label, add_special_tokens=False) for label in labels]
    width = len(prefix) + max(len(ids) for ids in label_ids)
    batch = [prefix + ids + [0] * (width - len(prefix) - len(ids)) for ids in label_ids]
    logits = patient.model(mx.array(batch))
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    scores = []
    for row, ids in enumerate(label_ids):
        positions = mx.arange(len(prefix) - 1, len(prefix) - 1 + len(ids))
        picked = logprobs[row, positions, mx.array(ids)]
        scores.append(float(mx.sum(picked)))
    return scores


def choose(patient, messages: list[dict], options: dict[str, str]) -> tuple[str, dict[str, float]]:
    """Pick the option key whose label text the model finds most likely; also return the scores."""
    keys = list(options)
    scores = label_logprobs(patient, messages, [options[k] for k in keys])
    table = dict(zip(keys, scores))
    return max(table, key=table.get), table

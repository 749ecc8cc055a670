"""Model-quality measurements shared by verification and the benchmarks."""

import math

import mlx.core as mx
import mlx.nn as nn


def perplexity(patient, text: str, window: int = 256) -> float:
    """Token-level perplexity of `text` in non-overlapping windows (held-out general text)."""
    ids = list(patient.tokenizer.encode(text, add_special_tokens=False))
    windows = [ids[i:i + window + 1] for i in range(0, len(ids) - 1, window) if len(ids[i:i + window + 1]) > 8]
    total, count = 0.0, 0
    for w in windows:
        tokens = mx.array([w])
        logits = patient.model(tokens[:, :-1]).astype(mx.float32)
        loss = nn.losses.cross_entropy(logits, tokens[:, 1:], reduction="sum")
        total += loss.item()
        count += len(w) - 1
    return math.exp(total / max(count, 1))


def token_perplexity(model, token_lists: list[list[int]], batch_size: int = 2,
                     replay: tuple[int, list] | None = None) -> float:
    """Perplexity of several token sequences, in small right-padded batches (padding is not scored).

    Small batches because the logits are batch·length·vocab floats: with a 49k vocabulary, eight
    80-token texts at once would be the largest allocation of an edit. `replay`: (layer, each
    sequence's residual entering it), see verify.unchanged."""
    from edge_repair.engine.capture import pad_batch, replayed_logits

    total, count = 0.0, 0
    for start in range(0, len(token_lists), batch_size):
        chunk = token_lists[start:start + batch_size]
        tokens = pad_batch(chunk)
        if replay is None:
            logits = model(tokens[:, :-1])
        else:
            logits = replayed_logits(model, replay[0], [mx.array(h[:-1]) for h in replay[1][start:start + batch_size]])
        losses = nn.losses.cross_entropy(logits.astype(mx.float32), tokens[:, 1:], reduction="none")
        mask = mx.array([[1.0] * (len(t) - 1) + [0.0] * (tokens.shape[1] - len(t)) for t in chunk])
        total += (losses * mask).sum().item()
        count += sum(len(t) - 1 for t in chunk)
    return math.exp(total / max(count, 1))

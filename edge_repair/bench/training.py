"""Training-based unlearning baselines for one forget pair (paper Table 8): GA, NPO, RMU.

Full-weight Adam updates of a few MLPs of the dequantized f32 model, a few steps, each with a
retain term on a few retain prompts (the base model's own greedy replies as targets):
  ga   minimise  log p(r_f | p_f) + CE(retain)                           (gradient ascent)
  npo  minimise  (2/β)·log(1 + (p/p_ref)^β)(r_f | p_f) + CE(retain)       (Zhang et al. 2024)
  rmu  minimise  ‖h_ℓ(forget) − c·u‖² + α‖h_ℓ(retain) − h_ℓ^ref(retain)‖² (Li et al. 2024, WMDP);
       u a fixed random unit vector, c a multiple of the activations' norm, MLPs of ℓ−2..ℓ trained.
`trained(...)` restores the original weights on exit, so methods can be compared on one model.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from edge_repair.engine.capture import pad_batch
from edge_repair.engine.verify import chat_tokens, reply_tokens
from edge_repair.errors import InputError

METHODS = ("ga", "npo", "rmu")
LEARNING_RATES = {"ga": 1e-5, "npo": 1e-5, "rmu": 5e-5}  # the papers' full-weight defaults
NPO_BETA = 0.1
RMU_STEER = 4.0    # c as a multiple of the mean activation norm at layer ℓ
RMU_ALPHA = 10.0   # weight of the retain term (both terms are normalised by the activation scale)


@dataclass
class Batch:
    """Right-padded prompt+reply sequences: inputs/targets shifted by one token."""

    inputs: mx.array        # (B, T)
    targets: mx.array       # (B, T)
    answer: mx.array        # (B, T) 1.0 where the target is a reply token
    valid: mx.array         # (B, T) 1.0 where the input is a real token


def make_batch(tokenizer, prompts: list[str], replies: list[str]) -> Batch:
    sequences, starts = [], []
    for prompt, reply in zip(prompts, replies):
        head = chat_tokens(tokenizer, prompt)
        sequences.append(head + reply_tokens(tokenizer, reply))
        starts.append(len(head))
    if any(len(s) == start for s, start in zip(sequences, starts)):
        raise InputError("a training reply is empty")
    width = max(len(s) for s in sequences) - 1
    answer = [[1.0 if start - 1 <= i < len(s) - 1 else 0.0 for i in range(width)] for s, start in zip(sequences, starts)]
    valid = [[1.0 if i < len(s) - 1 else 0.0 for i in range(width)] for s in sequences]
    return Batch(pad_batch([s[:-1] for s in sequences]), pad_batch([s[1:] for s in sequences]),
                 mx.array(answer), mx.array(valid))


def sequence_logprob(model, batch: Batch) -> mx.array:
    """log p(reply | prompt) per sequence, summed over the reply tokens: (B,)."""
    logits = model(batch.inputs).astype(mx.float32)
    token_logp = -nn.losses.cross_entropy(logits, batch.targets, reduction="none")
    return (token_logp * batch.answer).sum(axis=-1)


def hidden_at(model, tokens: mx.array, layer: int) -> mx.array:
    """The residual stream after block `layer` (run no further)."""
    from mlx_lm.models.base import create_attention_mask

    inner = model.model
    h = inner.embed_tokens(tokens)
    mask = create_attention_mask(h, None)
    for block in inner.layers[: layer + 1]:
        h = block(h, mask, None)
    return h


def rmu_layers(num_layers: int) -> tuple[int, list[int]]:
    """RMU steers layer ℓ ≈ L/4 (7 of 32 in WMDP) and trains the MLPs of ℓ−2..ℓ."""
    layer = max(2, num_layers // 4)
    return layer, [layer - 2, layer - 1, layer]


def _retain_ce(model, batch: Batch) -> mx.array:
    return -sequence_logprob(model, batch).sum() / batch.answer.sum()


def _loss(method: str, model, forget: Batch, retain: Batch, layer: int | None):
    if method == "ga":
        return lambda: sequence_logprob(model, forget).sum() / forget.answer.sum() + _retain_ce(model, retain)
    if method == "npo":
        reference = mx.stop_gradient(sequence_logprob(model, forget))
        mx.eval(reference)

        def npo():
            ratio = sequence_logprob(model, forget) - reference
            return (2 / NPO_BETA) * mx.logaddexp(0.0, NPO_BETA * ratio).mean() + _retain_ce(model, retain)
        return npo
    if method == "rmu":
        base_forget = hidden_at(model, forget.inputs, layer)
        base_retain = hidden_at(model, retain.inputs, layer)
        scale = (mx.linalg.norm(base_forget, axis=-1) * forget.valid).sum() / forget.valid.sum()
        u = mx.random.uniform(shape=(base_forget.shape[-1],), key=mx.random.key(0))
        target = RMU_STEER * scale * u / mx.linalg.norm(u)
        mx.eval(base_retain, target, scale)

        def masked_mse(h, goal, valid):
            return (((h - goal) ** 2).sum(axis=-1) * valid).sum() / valid.sum() / scale ** 2

        def rmu():
            return (masked_mse(hidden_at(model, forget.inputs, layer), target, forget.valid)
                    + RMU_ALPHA * masked_mse(hidden_at(model, retain.inputs, layer), base_retain, retain.valid))
        return rmu
    raise InputError(f"unknown baseline '{method}'; choose from {', '.join(METHODS)}")


@contextmanager
def trained(patient, method: str, forget: Batch, retain: Batch, layers: list[int], steps: int = 20,
            lr: float | None = None):
    """Train the MLPs of `layers` in place; yields the loss history; the weights come back on exit."""
    model = patient.model
    rmu_layer = rmu_layers(len(model.layers))[0] if method == "rmu" else None
    model.freeze()
    for l in layers:
        model.layers[l].mlp.unfreeze()
    saved = tree_flatten(model.trainable_parameters())   # MLX arrays are immutable: references suffice
    try:
        loss_fn = _loss(method, model, forget, retain, rmu_layer)
        optimizer = optim.Adam(learning_rate=lr or LEARNING_RATES[method])
        step = nn.value_and_grad(model, loss_fn)
        history = []
        for _ in range(steps):
            loss, grads = step()
            optimizer.update(model, grads)
            mx.eval(model.trainable_parameters(), optimizer.state, loss)
            history.append(round(loss.item(), 4))
        yield history
    finally:
        model.update(tree_unflatten(saved))
        model.unfreeze()
        mx.eval(model.parameters())

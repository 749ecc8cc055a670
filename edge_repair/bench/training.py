"""Training-based unlearning baselines for one forget pair (paper Table 8): GA, NPO, RMU.

Full-weight Adam updates of a few MLPs of the dequantized f32 model, a few steps, each with a
retain term on a few retain prompts (the base model's own greedy replies as targets):
  ga   minimise  log p(r_f | p_f) + CE(retain)                           (gradient ascent)
  npo  minimise  (2/β)·log(1 + (p/p_ref)^β)(r_f | p_f) + CE(retain)       (Zhang et al. 2024)
  rmu  minimise  ‖h_ℓ(forget) − c·u‖² + α‖h_ℓ(retain) − h_ℓ^ref(retain)‖² (Li et al. 2024, WMDP);
       u a fixed random unit vector, c a multiple of the activations' norm, MLPs of ℓ−2..ℓ trained.
`trained(...)` restores the original weights on exit, so methods can be compared on one model.

"ga-lean" and "npo-lean" minimise the same losses with the same steps, computed as an engineer
tuning them would: the frozen blocks below the trained ones run once (their output is the same
every step), and the output head (49k×576 on the default model) only at the reply tokens the
loss reads. The plain "ga" and "npo" run the whole model every step, as common implementations do.
"""

from contextlib import contextmanager
from dataclasses import dataclass

import mlx.core as mx
import mlx.nn as nn
import mlx.optimizers as optim
from mlx.utils import tree_flatten, tree_unflatten

from edge_repair.engine.capture import logits_only_at, pad_batch, replayed_logits
from edge_repair.engine.verify import chat_tokens, reply_tokens
from edge_repair.errors import InputError

LEAN = {"ga-lean": "ga", "npo-lean": "npo"}  # same loss, computed leanly (see the module's docstring)
METHODS = ("ga", "npo", "rmu", *LEAN)
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
    positions: mx.array     # (B, k) the positions whose target is a reply token (a row's last repeated)
    picked: mx.array        # (B, k) 1.0 where `positions` is not such a repeat


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
    reply = [list(range(start - 1, len(s) - 1)) for s, start in zip(sequences, starts)]
    k = max(len(r) for r in reply)
    return Batch(pad_batch([s[:-1] for s in sequences]), pad_batch([s[1:] for s in sequences]),
                 mx.array(answer), mx.array(valid), mx.array([r + [r[-1]] * (k - len(r)) for r in reply]),
                 mx.array([[1.0] * len(r) + [0.0] * (k - len(r)) for r in reply]))


def sequence_logprob(model, batch: Batch, below: tuple[int, mx.array] | None = None) -> mx.array:
    """log p(reply | prompt) per sequence, summed over the reply tokens: (B,). `below`: (layer, the
    residual entering it at every position, see frozen_below): only the blocks from there up run,
    and the output head only at the reply positions."""
    if below is None:
        logits = model(batch.inputs).astype(mx.float32)
        token_logp = -nn.losses.cross_entropy(logits, batch.targets, reduction="none")
        return (token_logp * batch.answer).sum(axis=-1)
    with logits_only_at(model, batch.positions):
        logits = replayed_logits(model, below[0], list(below[1])).astype(mx.float32)
    targets = mx.take_along_axis(batch.targets, batch.positions, axis=1)
    return (-nn.losses.cross_entropy(logits, targets, reduction="none") * batch.picked).sum(axis=-1)


def frozen_below(model, batch: Batch, layers: list[int]) -> tuple[int, mx.array] | None:
    """(lowest trained layer, the residual entering it): the frozen blocks' output, the same every
    step (None when the lowest layer is trained: the whole model runs)."""
    layer = min(layers)
    if not layer:
        return None
    hidden = hidden_at(model, batch.inputs, layer - 1)
    mx.eval(hidden)
    return layer, hidden


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


def _loss(method: str, model, forget: Batch, retain: Batch, layer: int | None, layers: list[int]):
    below_forget, below_retain = ([frozen_below(model, b, layers) for b in (forget, retain)] if method in LEAN
                                  else [None, None])
    method = LEAN.get(method, method)

    def forget_logprob() -> mx.array:
        return sequence_logprob(model, forget, below_forget)

    def retain_ce() -> mx.array:
        return -sequence_logprob(model, retain, below_retain).sum() / retain.answer.sum()

    if method == "ga":
        return lambda: forget_logprob().sum() / forget.answer.sum() + retain_ce()
    if method == "npo":
        reference = mx.stop_gradient(forget_logprob())
        mx.eval(reference)

        def npo():
            ratio = forget_logprob() - reference
            return (2 / NPO_BETA) * mx.logaddexp(0.0, NPO_BETA * ratio).mean() + retain_ce()
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
        loss_fn = _loss(method, model, forget, retain, rmu_layer, layers)
        optimizer = optim.Adam(learning_rate=lr or LEARNING_RATES[LEAN.get(method, method)])
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

"""Attention for MLX on a CPU whose softmax uses the multiply-add exp (cpu_swiglu.exp).

MLX's CPU attention runs its softmax on the scalar exp: measured on this 2-core x86, a batch of
32 questions (9 heads, 26 tokens after a 27-token cached prefix) took 4.7 ms per layer, a fifth of
the block, against 2.2 ms for the same attention with the fast exp. The exp is compiled into
the softmax, which has its own gradient for the baselines' fine-tunes.
Only the prompt passes (several query tokens) take it: a decoding step's attention is small, and
its growing key length would cost a new trace every step.
"""

import sys

import mlx.core as mx
from mlx_lm.models import base

from edge_repair.cpu_swiglu import exp

MASKED = -1e30  # finite: a row with every key masked (left padding) averages instead of giving NaN


@mx.compile
def _softmax_forward(scores: mx.array) -> mx.array:
    weights = exp(scores - scores.max(axis=-1, keepdims=True))
    return weights / weights.sum(axis=-1, keepdims=True)


@mx.custom_function
def softmax(scores: mx.array) -> mx.array:
    """Softmax over the last axis of float32 `scores`, on the multiply-add exp."""
    return _softmax_forward(scores)


@softmax.vjp
def _softmax_vjp(primals, cotangent, output):
    """MLX cannot differentiate the exp's bit view; the baselines' fine-tunes backpropagate through attention."""
    return output * (cotangent - (cotangent * output).sum(axis=-1, keepdims=True))


def attention(queries: mx.array, keys: mx.array, values: mx.array, scale: float, mask) -> mx.array:
    """softmax(q·kᵀ·scale + mask)·v with grouped-query heads sharing their keys and values.
    mask: None, "causal" (aligned to the last key: cached keys before the queries stay visible),
    or an array broadcasting to (B, heads, L, S), booleans (True attends) or added."""
    b, heads, length, dim = queries.shape
    groups, width = keys.shape[1], keys.shape[2]
    grouped = (queries * scale).reshape(b, groups, heads // groups, length, dim)
    scores = grouped @ keys[:, :, None].swapaxes(-1, -2)  # (B, kv heads, heads per kv head, L, S)
    if isinstance(mask, str):
        mask = mx.arange(width)[None] <= mx.arange(length)[:, None] + (width - length)
    if mask is not None:
        mask = mask[:, :, None] if mask.ndim == 4 else mask
        scores = mx.where(mask, scores, MASKED) if mask.dtype == mx.bool_ else scores + mask
    return (softmax(scores) @ values[:, :, None]).reshape(queries.shape)


def scaled_dot_product_attention(queries, keys, values, cache, scale: float, mask, sinks=None) -> mx.array:
    """mlx-lm's attention (models/base.py), computed here for float32 prompt passes."""
    if (sinks is not None or hasattr(cache, "bits") or queries.shape[2] == 1 or queries.dtype != mx.float32
            or (isinstance(mask, str) and mask != "causal")):
        return base.scaled_dot_product_attention(queries, keys, values, cache=cache, scale=scale, mask=mask, sinks=sinks)
    return attention(queries, keys, values, scale, mask)


def use_for(model) -> bool:
    """Have the model's architecture module call this attention, if it calls mlx-lm's shared one
    (llama, qwen2, …). Every model of that architecture in the process then uses it. Returns
    whether the module was switched."""
    layers = getattr(model, "layers", None)
    module = sys.modules.get(type(layers[0].self_attn).__module__) if layers and hasattr(layers[0], "self_attn") else None
    current = getattr(module, "scaled_dot_product_attention", None) if module else None
    if current not in (base.scaled_dot_product_attention, scaled_dot_product_attention):
        return False
    module.scaled_dot_product_attention = scaled_dot_product_attention
    return True

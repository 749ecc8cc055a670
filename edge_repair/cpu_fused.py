"""RoPE and RMSNorm for MLX on a CPU, each one native op (native/fused.cpp) with MLX's results.

MLX's CPU backend runs mx.fast.rope and mx.fast.rms_norm as chains of small ops: measured on a
2-core x86, ~48 µs a RoPE and ~18 µs an RMSNorm on one decoding token, and a token of the
default model makes 60 and 61 of them, a quarter of a decoding step. A RoPE's cos and sin
depend only on the positions, which every layer of a forward pass shares: the model's RoPE
layers share one table, computed by mx.fast.rope itself (so it holds MLX's values), and each
layer only rotates. The outputs are bit-identical to MLX's (native.fused_op checks it on load).
"""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from edge_repair import native


def rope_table(batch: int, length: int, dims: int, base: float, scale: float, offset) -> mx.array:
    """(batch, length, dims): each position's (cos, sin) pairs, interleaved, exactly as mx.fast.rope
    computes them: mx.fast.rope itself rotating the pairs (1, 0) gives (cos, sin)."""
    pairs = mx.broadcast_to(mx.array([1.0, 0.0] * (dims // 2)), (batch, 1, length, dims))
    return mx.fast.rope(pairs, dims, traditional=True, base=base, scale=scale, offset=offset)[:, 0]


class RopeTables:
    """The (cos, sin) table of the last positions asked for: one forward pass asks each of its
    layers' RoPE for the same ones. Keyed by an int offset's value or an array offset's identity
    (the array is held, so its id cannot be reused while it is the key). The model's forward
    pass is never traced by mx.compile here (a traced table would outlive its trace)."""

    def __init__(self):
        self._shape, self._offset, self._table = None, None, None

    def table(self, length: int, offset, dims: int, base: float, scale: float) -> mx.array:
        shape = (length, dims, base, scale)
        same_offset = self._offset is offset or (type(offset) is int and type(self._offset) is int
                                                 and self._offset == offset)
        if not (same_offset and self._shape == shape):
            batch = offset.size if isinstance(offset, mx.array) and offset.size > 1 else 1
            self._shape, self._offset = shape, offset
            self._table = rope_table(batch, length, dims, base, scale, offset)
        return self._table


class FusedRoPE(nn.RoPE):
    """nn.RoPE computed by one native rotation from the model's shared table (float32, 4-D inputs)."""

    @classmethod
    def wrap(cls, rope: nn.RoPE, tables: RopeTables, ops) -> "FusedRoPE":
        layer = cls(rope.dims, traditional=rope.traditional, base=rope.base, scale=rope.scale)
        layer._tables, layer._ops = tables, ops
        return layer

    def __call__(self, x: mx.array, offset=0) -> mx.array:
        if x.dtype != mx.float32 or x.ndim != 4 or not isinstance(offset, (int, mx.array)):
            return super().__call__(x, offset)
        table = self._tables.table(x.shape[2], offset, self.dims, self.base, self.scale)
        return self._ops.rope_rotate(x, table, self.dims, self.traditional)


class FusedRMSNorm(nn.RMSNorm):
    """nn.RMSNorm computed by one native op (float32)."""

    @classmethod
    def wrap(cls, norm: nn.RMSNorm, ops) -> "FusedRMSNorm":
        layer = cls(norm.weight.shape[0], eps=norm.eps)
        layer.update(norm.parameters())
        layer._ops = ops
        return layer

    def __call__(self, x: mx.array) -> mx.array:
        if x.dtype != mx.float32 or self.weight.dtype != mx.float32:
            return super().__call__(x)
        return self._ops.rms_norm(x, self.weight, self.eps)


def use_for(model: nn.Module) -> int:
    """Swap the model's RoPE and RMSNorm layers (exactly nn.RoPE / nn.RMSNorm) for the fused ones
    whose native op is in use; returns how many were swapped (0 without the native kernels)."""
    rope, norm = native.fused_op("rope_rotate"), native.fused_op("rms_norm")
    tables, swapped = RopeTables(), []
    for path, module in model.named_modules():
        if rope and type(module) is nn.RoPE and module.base is not None:
            swapped.append((path, FusedRoPE.wrap(module, tables, rope)))
        elif norm and type(module) is nn.RMSNorm:
            swapped.append((path, FusedRMSNorm.wrap(module, norm)))
    model.update_modules(tree_unflatten(swapped))
    return len(swapped)

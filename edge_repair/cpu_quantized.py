"""Decoding steps on a CPU read the model file's quantized weights, not their f32 copies.

On CPU-only MLX edge-repair computes with f32 copies of the weights, so that matmuls use BLAS
(prompt passes ~300 tokens/s instead of ~15). A decoding step, though, is a matrix-vector
product that reads every weight once: ~0.55 GB a token on the default model, ~23 tokens/s on a
2-core x86. Loading keeps the quantized weights the f32 copies were dequantized from, and a
layer given at most MAX_ROWS rows (a decoding step of up to that many sequences) computes from
them with native/quantized_matmul.cpp; more rows (prompts, captures, training) take the f32 copy.
Both compute x · Wᵀ for the same W; only the order of the float additions differs.
"""

import mlx.core as mx
import mlx.nn as nn
from mlx.utils import tree_unflatten

from edge_repair import native

# Measured on the default model (2-core x86, the kernel on both cores): a decoding step of 16 rows
# took 55–60 ms from the quantized copy against 74–79 ms from the f32 one (BLAS), 24 rows about the same.
MAX_ROWS = 16


def quantized_layers(model: nn.Module) -> dict[str, tuple]:
    """path -> (weight, scales, biases, group_size, bits) of every affine-quantized linear layer and
    embedding the kernel can read, taken before the model is dequantized (empty without the kernel)."""
    if native.kernels() is None:
        return {}
    kept = {}
    for path, module in model.named_modules():
        if not isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            continue
        if getattr(module, "mode", "affine") != "affine" or module.get("biases") is None:
            continue
        if module.bits in (4, 8) and module.group_size % 32 == 0:
            kept[path] = (module.weight, module.scales, module.biases, module.group_size, module.bits)
    return kept


def use_for(model: nn.Module, kept: dict[str, tuple]) -> int:
    """Have the model's dequantized layers decode from their quantized weights; returns how many do."""
    kernel = native.kernels()
    if kernel is None or not kept:
        return 0
    modules = dict(model.named_modules())
    swapped = []
    for path, quantized in kept.items():
        module = modules.get(path)
        if type(module) is nn.Linear:
            swapped.append((path, DecodingLinear.wrap(module, quantized, kernel)))
        elif type(module) is nn.Embedding:
            swapped.append((path, DecodingEmbedding.wrap(module, quantized, kernel)))
    model.update_modules(tree_unflatten(swapped))
    return len(swapped)


def _few_rows(x: mx.array) -> bool:
    return x.size <= MAX_ROWS * x.shape[-1]


class _Decoding:
    """The quantized copy and the weight it is a copy of: once the weight is replaced (a
    fine-tune's step, an update), the layer computes from the new f32 weight only."""

    def _attach(self, quantized: tuple, kernel) -> None:
        self._source = self.weight  # underscored: not a parameter (never saved, trained or evaluated)
        self._quantized = quantized
        self._kernel = kernel.quantized_matmul_rows

    def _rows(self, x: mx.array) -> mx.array | None:
        if self.weight is not self._source or not _few_rows(x):
            return None
        w, scales, biases, group_size, bits = self._quantized
        return self._kernel(x, w, scales, biases, self.weight, group_size, bits)


class DecodingLinear(_Decoding, nn.Linear):
    @classmethod
    def wrap(cls, linear: nn.Linear, quantized: tuple, kernel) -> "DecodingLinear":
        output_dims, input_dims = linear.weight.shape
        layer = cls(input_dims, output_dims, bias="bias" in linear)
        layer.update(linear.parameters())
        layer._attach(quantized, kernel)
        return layer

    def __call__(self, x: mx.array) -> mx.array:
        y = self._rows(x)
        if y is None:
            return super().__call__(x)
        return y + self.bias if "bias" in self else y


class DecodingEmbedding(_Decoding, nn.Embedding):
    @classmethod
    def wrap(cls, embedding: nn.Embedding, quantized: tuple, kernel) -> "DecodingEmbedding":
        layer = cls(*embedding.weight.shape)
        layer.update(embedding.parameters())
        layer._attach(quantized, kernel)
        return layer

    def as_linear(self, x: mx.array) -> mx.array:  # a tied output head
        y = self._rows(x)
        return super().as_linear(x) if y is None else y

import mlx.core as mx
import mlx.nn as nn
import mlx_lm
from mlx.utils import tree_flatten
from mlx_lm.utils import dequantize_model

from edge_repair.loading import to_float32


def _half_scales(model):
    """As a GGUF or hub model holds them: scales and biases in float16."""
    for _, module in model.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            module.scales, module.biases = module.scales.astype(mx.float16), module.biases.astype(mx.float16)


def test_to_float32_on_two_streams_dequantizes_in_f32(tiny_quantized_dir):
    ours, _ = mlx_lm.load(str(tiny_quantized_dir))
    reference, _ = mlx_lm.load(str(tiny_quantized_dir))
    rounded, _ = mlx_lm.load(str(tiny_quantized_dir))
    for model in (ours, reference, rounded):
        _half_scales(model)
    to_float32(ours)
    # scale·q + bias in f32, one stream: what llama.cpp computes (mlx-lm's own rounds to float16)
    for _, module in reference.named_modules():
        if isinstance(module, (nn.QuantizedLinear, nn.QuantizedEmbedding)):
            module.scales, module.biases = module.scales.astype(mx.float32), module.biases.astype(mx.float32)
    dequantize_model(reference)
    dequantize_model(rounded)
    expected = dict(tree_flatten(reference.parameters()))
    got = dict(tree_flatten(ours.parameters()))
    assert set(got) == set(expected)
    assert all(a.dtype == mx.float32 and mx.array_equal(a, expected[k].astype(mx.float32)).item()
               for k, a in got.items())
    assert not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in ours.named_modules())
    # and that differs from rounding each weight to float16 (the test would not notice otherwise)
    half = dict(tree_flatten(rounded.parameters()))
    assert not all(mx.array_equal(got[k], half[k].astype(mx.float32)).item() for k in got)

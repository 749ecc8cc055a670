import mlx.core as mx
import mlx.nn as nn
import mlx_lm
from mlx.utils import tree_flatten
from mlx_lm.utils import dequantize_model

from edge_repair.loading import to_float32


def test_to_float32_on_two_streams_gives_the_weights_mlx_lm_dequantizes(tiny_quantized_dir):
    ours, _ = mlx_lm.load(str(tiny_quantized_dir))
    reference, _ = mlx_lm.load(str(tiny_quantized_dir))
    to_float32(ours)
    dequantize_model(reference)  # one stream, as mlx-lm does it
    expected = dict(tree_flatten(reference.parameters()))
    got = dict(tree_flatten(ours.parameters()))
    assert set(got) == set(expected)
    assert all(a.dtype == mx.float32 and mx.array_equal(a, expected[k].astype(mx.float32)).item()
               for k, a in got.items())
    assert not any(isinstance(m, (nn.QuantizedLinear, nn.QuantizedEmbedding)) for _, m in ours.named_modules())

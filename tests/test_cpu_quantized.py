import shutil
import sys

import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from edge_repair import cpu_quantized, native
from edge_repair.loading import load_patient


@pytest.mark.parametrize("bits,group,scale_type", [(4, 32, mx.float16), (4, 64, mx.bfloat16), (8, 32, mx.float32),
                                                   (8, 128, mx.float16)])
def test_kernel_computes_x_times_the_dequantized_weight(kernel, bits, group, scale_type):
    w = mx.random.normal((301, 384), key=mx.random.key(3)) * 0.2
    q, scales, biases = mx.quantize(w, group_size=group, bits=bits)
    scales, biases = scales.astype(scale_type), biases.astype(scale_type)
    # The weights the f32 copies hold (loading.to_float32): scale·q + bias computed in f32.
    dense = mx.dequantize(q, scales.astype(mx.float32), biases.astype(mx.float32), group_size=group, bits=bits)
    for rows in (1, 3, 8, 11, 16):  # 8 rows share an unpacked chunk: the remainders too
        x = mx.random.normal((rows, 384), key=mx.random.key(rows))
        got = kernel.quantized_matmul_rows(x, q, scales, biases, dense, group, bits)
        want = x @ dense.T
        assert got.shape == (rows, 301) and got.dtype == mx.float32
        assert mx.allclose(got, want, rtol=1e-5, atol=1e-4).item(), float(mx.abs(got - want).max())
        # Several rows split their columns among the cores: each column computed once, as alone.
        alone = mx.concatenate([kernel.quantized_matmul_rows(x[i:i + 1], q, scales, biases, dense, group, bits)
                                for i in range(rows)])
        assert mx.array_equal(got, alone).item()


def test_kernel_rejects_shapes_it_cannot_read(kernel):
    q, scales, biases = mx.quantize(mx.zeros((8, 64)), group_size=32, bits=4)
    dense = mx.zeros((8, 64))
    with pytest.raises(ValueError):
        kernel.quantized_matmul_rows(mx.zeros((1, 32)), q, scales, biases, dense, 32, 4)
    with pytest.raises(ValueError):
        kernel.quantized_matmul_rows(mx.zeros((1, 64)), q, scales, biases, dense, 32, 3)
    with pytest.raises(ValueError):
        kernel.quantized_matmul_rows(mx.zeros((1, 64)), q, scales, biases, dense.T, 32, 4)


def test_kernel_gradients_are_the_dense_layers(kernel):
    w = mx.random.normal((24, 64), key=mx.random.key(5))
    q, scales, biases = mx.quantize(w, group_size=32, bits=4)
    dense = mx.dequantize(q, scales, biases, group_size=32, bits=4)
    x = mx.random.normal((2, 3, 64), key=mx.random.key(6))
    target = mx.random.normal((2, 3, 24), key=mx.random.key(7))

    def loss(x, dense, rows):
        y = kernel.quantized_matmul_rows(x, q, scales, biases, dense, 32, 4) if rows else x @ dense.T
        return ((y - target) ** 2).sum()

    got = mx.grad(loss, argnums=(0, 1))(x, dense, True)
    want = mx.grad(loss, argnums=(0, 1))(x, dense, False)
    assert all(mx.allclose(a, b, rtol=1e-4, atol=1e-4).item() for a, b in zip(got, want))


def test_decoding_layers_give_the_f32_model_outputs(tiny_quantized_dir, kernel, monkeypatch):
    patient = load_patient(str(tiny_quantized_dir), compute="f32")
    model = patient.model
    decoding = [m for _, m in model.named_modules() if isinstance(m, cpu_quantized._Decoding)]
    assert decoding and isinstance(model.model.embed_tokens, cpu_quantized.DecodingEmbedding)
    # Only weight (and bias) are parameters: adapters, fuse and fine-tunes see a plain layer.
    assert all(k.rsplit(".", 1)[-1] in ("weight", "bias") for k, _ in tree_flatten(model.parameters()))
    tokens = mx.array([[5, 9, 17, 30, 2, 44]])
    few = model(tokens[:, :1])  # a decoding step's rows: the quantized weights
    monkeypatch.setattr(cpu_quantized, "MAX_ROWS", 0)  # every layer on its f32 weight
    with_f32 = model(tokens[:, :1])
    assert mx.allclose(few, with_f32, rtol=1e-4, atol=1e-4).item()


def test_a_replaced_weight_is_used_not_the_stale_quantized_copy(tiny_quantized_dir, kernel):
    patient = load_patient(str(tiny_quantized_dir), compute="f32")
    layer = patient.model.model.layers[0].mlp.up_proj
    assert isinstance(layer, cpu_quantized.DecodingLinear)
    x = mx.random.normal((1, layer.weight.shape[1]), key=mx.random.key(0))
    before = layer(x)
    layer.update({"weight": layer.weight * 2.0})  # what a fine-tune's step does
    assert mx.allclose(layer(x), 2.0 * before, rtol=1e-4, atol=1e-4).item()


def test_without_the_kernel_layers_stay_plain(tiny_quantized_dir, monkeypatch):
    monkeypatch.setenv("EDGE_REPAIR_KERNEL", "off")
    model = load_patient(str(tiny_quantized_dir), compute="f32").model
    assert not any(isinstance(m, cpu_quantized._Decoding) for _, m in model.named_modules())
    assert all(type(m) is not nn.QuantizedLinear for _, m in model.named_modules())


def test_a_failed_build_is_said_once_and_decoding_uses_the_f32_weights(tiny_quantized_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGE_REPAIR_MODELS", str(tmp_path / "models"))
    monkeypatch.setenv("CXX", shutil.which("false") or "/bin/false")  # a compiler that always fails
    monkeypatch.delitem(sys.modules, native.MODULE, raising=False)
    assert native.kernels() is None
    assert native.failure().startswith("compiling failed")
    retried = []
    monkeypatch.setattr(native, "_build", lambda library, tools: retried.append(library))
    assert native.kernels() is None and not retried  # the note stops a rebuild on every load
    model = load_patient(str(tiny_quantized_dir), compute="f32").model
    assert not any(isinstance(m, cpu_quantized._Decoding) for _, m in model.named_modules())

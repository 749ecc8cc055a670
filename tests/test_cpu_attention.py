import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import base
from mlx_lm.models.base import create_causal_mask

from edge_repair import cpu_attention


def _qkv(batch=3, heads=6, kv_heads=2, length=5, width=9, dim=16, seed=0):
    rng = np.random.default_rng(seed)
    shape = lambda h, n: mx.array(rng.normal(0, 2, (batch, h, n, dim)).astype(np.float32))  # noqa: E731
    return shape(heads, length), shape(kv_heads, width), shape(kv_heads, width)


def _mlx(q, k, v, mask):
    return mx.fast.scaled_dot_product_attention(q, k, v, scale=0.25, mask=mask)


@pytest.mark.parametrize("length,width", [(5, 5), (5, 9), (1, 9)])
def test_causal_attention_after_cached_keys_matches_mlx(length, width):
    q, k, v = _qkv(length=length, width=width)
    got = cpu_attention.scaled_dot_product_attention(q, k, v, None, scale=0.25, mask="causal")
    assert np.allclose(np.array(got), np.array(_mlx(q, k, v, "causal")), atol=1e-5)


def test_boolean_and_additive_masks_match_mlx():
    q, k, v = _qkv(length=4, width=7)
    left = create_causal_mask(4, offset=3, left_padding=mx.array([0, 2, 5]))  # (B, 1, L, S)
    assert np.allclose(np.array(cpu_attention.attention(q, k, v, 0.25, left)),
                       np.array(_mlx(q, k, v, left)), atol=1e-5, equal_nan=True)
    additive = mx.array(np.random.default_rng(2).normal(0, 3, (4, 7)).astype(np.float32))
    assert np.allclose(np.array(cpu_attention.attention(q, k, v, 0.25, additive)),
                       np.array(_mlx(q, k, v, additive)), atol=1e-5)


def test_a_query_that_sees_no_key_gives_no_nan():
    q, k, v = _qkv(length=4, width=7)
    nothing = mx.zeros((3, 1, 4, 7), mx.bool_)  # left padding longer than the row: every key masked
    assert np.all(np.isfinite(np.array(cpu_attention.attention(q, k, v, 0.25, nothing))))


def test_gradients_through_it_match_mlx():
    q, k, v = _qkv(length=5, width=8)
    loss = lambda f: lambda q, k, v: (f(q, k, v) ** 2).sum()  # noqa: E731
    ours = mx.grad(loss(lambda q, k, v: cpu_attention.attention(q, k, v, 0.25, "causal")), argnums=(0, 1, 2))(q, k, v)
    theirs = mx.grad(loss(lambda q, k, v: _mlx(q, k, v, "causal")), argnums=(0, 1, 2))(q, k, v)
    for a, b in zip(ours, theirs):
        assert np.allclose(np.array(a), np.array(b), rtol=1e-4, atol=1e-4)


def test_decoding_steps_and_other_dtypes_stay_with_mlx(monkeypatch):
    calls = []
    monkeypatch.setattr(base, "scaled_dot_product_attention", lambda *a, **k: calls.append(a[0].shape) or a[0])
    q, k, v = _qkv(length=1)
    cpu_attention.scaled_dot_product_attention(q, k, v, None, scale=0.25, mask=None)
    q, k, v = (x.astype(mx.bfloat16) for x in _qkv())
    cpu_attention.scaled_dot_product_attention(q, k, v, None, scale=0.25, mask="causal")
    assert len(calls) == 2


def test_a_llama_model_computes_the_same_logits_with_it(tiny_model_dir, monkeypatch):
    from mlx_lm.models import llama

    from edge_repair.loading import load_patient

    monkeypatch.setattr(llama, "scaled_dot_product_attention", base.scaled_dot_product_attention)
    patient = load_patient(str(tiny_model_dir), compute="f32")
    on_cpu = mx.default_device() == mx.cpu
    assert (llama.scaled_dot_product_attention is cpu_attention.scaled_dot_product_attention) == on_cpu
    tokens = mx.array([[1, 5, 6, 7, 8, 9, 10], [1, 5, 9, 3, 2, 2, 2]])
    ours = patient.model(tokens)
    monkeypatch.setattr(llama, "scaled_dot_product_attention", base.scaled_dot_product_attention)
    assert np.allclose(np.array(ours), np.array(patient.model(tokens)), atol=1e-4)


def test_architectures_with_their_own_attention_are_left_alone():
    class Block:
        self_attn = object()

    class Model:
        layers = [Block()]

    assert cpu_attention.use_for(Model()) is False

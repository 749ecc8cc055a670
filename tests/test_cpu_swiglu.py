import mlx.core as mx
import numpy as np
import pytest
from mlx_lm.models import activations

from edge_repair import cpu_swiglu


def test_exp_matches_float64_across_the_float32_range():
    z = np.concatenate([np.linspace(-87, 88, 20001), np.random.default_rng(0).normal(0, 5, 20000)]).astype(np.float32)
    got = np.array(cpu_swiglu.exp(mx.array(z)), np.float64)
    assert np.abs(got / np.exp(z.astype(np.float64)) - 1).max() < 3e-7


def test_exp_saturates_instead_of_overflowing():
    got = np.array(cpu_swiglu.exp(mx.array([-1e4, -200.0, 200.0, 1e4], mx.float32)))
    assert np.all(np.isfinite(got)) and got[0] < 1e-37 and got[-1] > 1e38


@pytest.mark.parametrize("shape", [(3, 1, 128), (2, 7, 128), (64, 1536)])
def test_swiglu_matches_mlx_lm(shape):
    rng = np.random.default_rng(1)
    gate, x = (mx.array(rng.normal(0, 6, shape).astype(np.float32)) for _ in range(2))
    want = np.array(activations.swiglu(gate, x))
    assert np.allclose(np.array(cpu_swiglu.swiglu(gate, x)), want, rtol=1e-6, atol=1e-6)


def test_other_dtypes_use_mlx_lm():
    gate = mx.array(np.linspace(-8, 8, 64), mx.bfloat16)
    assert mx.array_equal(cpu_swiglu.swiglu(gate, gate), activations.swiglu(gate, gate))


def test_a_llama_model_computes_the_same_logits_with_it(tiny_model_dir, monkeypatch):
    from mlx_lm.models import llama

    from edge_repair.loading import load_patient

    monkeypatch.setattr(llama, "swiglu", activations.swiglu)  # restored after the test
    patient = load_patient(str(tiny_model_dir), compute="f32")
    assert (llama.swiglu is cpu_swiglu.swiglu) == (mx.default_device() == mx.cpu)  # loading switches on a CPU
    tokens = mx.array([[5, 17, 42, 99, 7, 3]])
    llama.swiglu = activations.swiglu
    original = np.array(patient.model(tokens))
    assert cpu_swiglu.use_for(patient.model) and llama.swiglu is cpu_swiglu.swiglu
    assert np.allclose(np.array(patient.model(tokens)), original, rtol=1e-5, atol=1e-5)


def test_models_without_mlx_lm_swiglu_are_left_alone():
    class Mlp:
        pass

    class Layer:
        mlp = Mlp()

    class Model:
        layers = [Layer()]

    assert not cpu_swiglu.use_for(Model())


def test_gradients_match_mlx_lm():
    rng = np.random.default_rng(2)
    gate, x = (mx.array(rng.normal(0, 4, (5, 32)).astype(np.float32)) for _ in range(2))
    weights = mx.array(rng.normal(0, 1, (5, 32)).astype(np.float32))
    ours = mx.grad(lambda g, u: (cpu_swiglu.swiglu(g, u) * weights).sum(), argnums=(0, 1))(gate, x)
    want = mx.grad(lambda g, u: (activations.swiglu(g, u) * weights).sum(), argnums=(0, 1))(gate, x)
    for a, b in zip(ours, want):
        assert np.allclose(np.array(a), np.array(b), rtol=1e-5, atol=1e-5)

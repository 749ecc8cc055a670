import mlx.core as mx
import mlx.nn as nn
import pytest
from mlx.utils import tree_flatten

from edge_repair import cpu_fused, cpu_swiglu, native
from edge_repair.engine.verify import greedy_tokens
from edge_repair.loading import load_patient

@pytest.fixture
def ops(kernel):
    assert all(native.fused_op(name) for name in native.FUSED), kernel.fused_problems
    return kernel


def _weights(a: mx.array) -> mx.array:
    return mx.arange(a.size).reshape(a.shape) / a.size


def _weighted_sum(f):
    """A loss whose gradient differs per element (a plain sum would hide swapped elements); its
    cotangent is exactly _weights."""
    return lambda *a: (f(*a) * _weights(a[0])).sum()


@pytest.mark.parametrize("traditional", [True, False])
@pytest.mark.parametrize("dims", [64, 32])
@pytest.mark.parametrize("offset", [0, 37, "per row"])
def test_rope_is_mlx_rope_bit_for_bit(ops, traditional, dims, offset):
    offset = mx.array([5, -3, 200]) if offset == "per row" else offset  # batched generation: one per row
    x = mx.random.normal((3, 13, 4, 64), key=mx.random.key(1)).transpose(0, 2, 1, 3) * 3.0  # as attention has it
    batch = offset.size if isinstance(offset, mx.array) else 1
    table = cpu_fused.rope_table(batch, x.shape[2], dims, 10000.0, 1.0, offset)
    rope = lambda a: mx.fast.rope(a, dims, traditional=traditional, base=10000.0, scale=1.0, offset=offset)
    rotated = lambda a: ops.rope_rotate(a, table, dims, traditional)
    assert mx.array_equal(rotated(x), rope(x)).item()
    assert mx.array_equal(mx.grad(_weighted_sum(rotated))(x), mx.grad(_weighted_sum(rope))(x)).item()


@pytest.mark.parametrize("layout", ["contiguous", "transposed", "broadcast"])
def test_rms_norm_is_mlx_rms_norm_bit_for_bit(ops, layout):
    x = mx.random.normal((6, 5, 96), key=mx.random.key(2)) * 4.0
    x = {"contiguous": x, "transposed": x.transpose(1, 0, 2), "broadcast": mx.broadcast_to(x[:1], x.shape)}[layout]
    weight = mx.random.normal((96,), key=mx.random.key(3))
    assert mx.array_equal(ops.rms_norm(x, weight, 1e-5), mx.fast.rms_norm(x, weight, 1e-5)).item()
    ours = mx.grad(_weighted_sum(lambda a, w: ops.rms_norm(a, w, 1e-5)), argnums=(0, 1))(x, weight)
    mlx = mx.grad(_weighted_sum(lambda a, w: mx.fast.rms_norm(a, w, 1e-5)), argnums=(0, 1))(x, weight)
    assert all(mx.array_equal(a, b).item() for a, b in zip(ours, mlx))


def test_swiglu_is_the_compiled_swiglu_bit_for_bit_and_keeps_its_gradient(ops):
    gate = mx.concatenate([mx.random.normal((40, 96), key=mx.random.key(4)) * 12.0,
                           mx.array([[-1e4, -100.0, -87.5, 0.0, 1e-30, 88.5, 100.0, 1e4] * 12])])  # saturation
    up = mx.random.normal(gate.shape, key=mx.random.key(5))
    assert mx.array_equal(ops.swiglu(gate, up), cpu_swiglu.compiled_swiglu(gate, up)).item()
    assert mx.array_equal(ops.swiglu(gate.T, up.T), cpu_swiglu.compiled_swiglu(gate.T, up.T)).item()
    grads = mx.grad(_weighted_sum(cpu_swiglu.swiglu), argnums=(0, 1))(gate, up)  # the custom function's own
    want = cpu_swiglu._backward(gate, up, _weights(gate))
    assert all(mx.array_equal(a, b).item() for a, b in zip(grads, want))


def test_fused_ops_reject_what_they_cannot_compute(ops):
    table = cpu_fused.rope_table(1, 4, 8, 10000.0, 1.0, 0)
    with pytest.raises(ValueError):
        ops.rope_rotate(mx.zeros((1, 2, 4, 8)), table, 6, True)  # a table for other dims
    with pytest.raises(ValueError):
        ops.rope_rotate(mx.zeros((2, 4, 8)), table, 8, True)
    with pytest.raises(ValueError):
        ops.rms_norm(mx.zeros((2, 8)), mx.zeros((4,)), 1e-5)
    with pytest.raises(ValueError):
        ops.swiglu(mx.zeros((2, 8), mx.float16), mx.zeros((2, 8), mx.float16))
    with pytest.raises(ValueError):
        ops.swiglu(mx.zeros((2, 8)), mx.zeros((8, 2)))


def test_a_loaded_model_gives_mlx_outputs_bit_for_bit(tiny_model_dir, ops, monkeypatch):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    fused = [m for _, m in patient.model.named_modules() if isinstance(m, (cpu_fused.FusedRoPE, cpu_fused.FusedRMSNorm))]
    layers = len(patient.model.layers)
    assert len(fused) == 3 * layers + 1  # per layer a RoPE and two norms, and the final norm
    keys = [k for k, _ in tree_flatten(patient.model.parameters())]
    tokens = mx.array([[5, 17, 42, 99, 7, 3], [8, 8, 1, 2, 60, 61]])
    prompts = ["hello there", "what is the capital of a place", "x"]
    ours = patient.model(tokens), greedy_tokens(patient, prompts, 8)  # per-row offsets in batched decoding

    monkeypatch.setattr(native, "fused_op", lambda name: None)  # MLX's ops throughout
    plain = load_patient(str(tiny_model_dir), compute="f32")
    assert not any(isinstance(m, cpu_fused.FusedRoPE) for _, m in plain.model.named_modules())
    assert [k for k, _ in tree_flatten(plain.model.parameters())] == keys  # adapters and fuse see the same model
    assert mx.array_equal(ours[0], plain.model(tokens)).item()
    assert ours[1] == greedy_tokens(plain, prompts, 8)


def test_one_forward_pass_computes_one_rope_table(monkeypatch):
    made = []
    monkeypatch.setattr(cpu_fused, "rope_table", lambda *args: made.append(args) or mx.zeros((1, 1, 8)))
    tables = cpu_fused.RopeTables()
    offset = mx.array([3, 4])
    for _ in range(3):  # the layers of one pass
        tables.table(5, 7, 8, 10000.0, 1.0)
    tables.table(1, 12, 8, 10000.0, 1.0)  # the next decoding step
    tables.table(1, offset, 8, 10000.0, 1.0)
    tables.table(1, offset, 8, 10000.0, 1.0)
    tables.table(1, mx.array([3, 4]), 8, 10000.0, 1.0)  # an equal array is another step's: not trusted
    tables.table(1, 12, 8, 10000.0, 1.0)  # an int offset after an array one (one prompt after a batch)
    assert [args[1:3] for args in made] == [(5, 8), (1, 8), (1, 8), (1, 8), (1, 8)]
    assert made[2][0] == 2  # per-row offsets: a table per row


def test_an_op_that_differs_keeps_mlx_s_and_the_others_stay_native(tiny_model_dir, ops, monkeypatch):
    monkeypatch.setattr(ops, "fused_problems", {"rms_norm": "RMSNorm differs from mx.fast.rms_norm"})
    patient = load_patient(str(tiny_model_dir), compute="f32")
    kinds = {type(m) for _, m in patient.model.named_modules()}
    assert nn.RMSNorm in kinds and cpu_fused.FusedRMSNorm not in kinds and cpu_fused.FusedRoPE in kinds
    assert native.fused_op("swiglu") is ops and native.fused_op("rms_norm") is None


@pytest.mark.parametrize("broken,reason", [("rope_rotate", "RoPE"), ("rms_norm", "RMSNorm"), ("swiglu", "SwiGLU")])
def test_the_load_check_catches_an_op_that_rounds_differently(ops, broken, reason):
    from types import SimpleNamespace

    fake = {name: getattr(ops, name) for name in native.FUSED}
    fake[broken] = lambda *args, _op=fake[broken]: _op(*args) * (1.0 + 2.0 ** -20)  # off by an ulp or so
    problems = native._check_fused(SimpleNamespace(**fake))
    assert list(problems) == [broken] and problems[broken].startswith(reason)
    assert native._check_fused(ops) == {}


def test_kernel_matmul_keeps_only_the_quantized_matmul(tiny_model_dir, ops, monkeypatch):
    monkeypatch.setenv("EDGE_REPAIR_KERNEL", "matmul")  # for comparisons (scripts/bench_speed.py)
    assert native.kernels() is not None and not any(native.fused_op(name) for name in native.FUSED)
    patient = load_patient(str(tiny_model_dir), compute="f32")
    assert not any(isinstance(m, cpu_fused.FusedRMSNorm) for _, m in patient.model.named_modules())

import mlx.core as mx
import mlx_lm
import numpy as np
import pytest

from edge_repair.edits.adapters import fitted
from edge_repair.engine import gated, spares
from edge_repair.engine.negatives import load_or_build
from edge_repair.loading import load_patient
from tests.tiny import HIDDEN_UNITS

TOKENS = mx.array([[5, 40, 77, 120, 9, 200, 31]])


@pytest.mark.parametrize("base", ["tiny_model_dir", "tiny_quantized_dir"])
def test_zero_neurons_leave_the_model_computing_the_same(base, request):
    model, _ = mlx_lm.load(str(request.getfixturevalue(base)))
    before = model(TOKENS)
    spares.add(model, list(range(len(model.layers))), 32)
    spares.add(model, [0], 32)  # added once per layer only
    mlp = model.layers[0].mlp
    assert spares.layout(model) == "0-3:32" and mlp.down_proj(mx.zeros((1, HIDDEN_UNITS))).shape == (1, 64)
    assert mx.allclose(model(TOKENS), before, atol=1e-5).item()
    hidden = mlp.up_proj(mx.random.normal((3, 64)))
    assert hidden.shape == (3, HIDDEN_UNITS) and mx.all(hidden[:, 128:] == 0).item()


def test_spare_count_follows_the_quantization_group():
    assert spares.count({"intermediate_size": 1536}) == 32
    assert spares.count({"intermediate_size": 1536, "quantization": {"group_size": 64, "bits": 4}}) == 64
    assert spares.count({"intermediate_sizes": [128, 256]}) == 0  # no single width a stock config could state
    assert spares.widened_config({"intermediate_size": 128}, 32)["intermediate_size"] == 160


def test_units_take_spare_neurons_first(tiny_model_dir, tmp_path):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    bank = load_or_build(patient, ["hello there", "what is up"], [2, 3], ["how are you"], home=tmp_path)
    use = bank.neuron_use[2]
    assert use.shape == (HIDDEN_UNITS,) and np.all(use[128:] == 0) and np.all(use[:128] > 0)
    taken = set()
    for _ in range(3):
        taken.add(gated.least_used_neuron(use, taken))
    assert min(taken) >= 128


def test_an_edit_recorded_before_the_spares_still_computes_the_same():
    rng = np.random.default_rng(0)
    a, b = (mx.array(rng.normal(size=s).astype(np.float32)) for s in [(128, 2), (2, 64)])
    up_a, up_b = (mx.array(rng.normal(size=s).astype(np.float32)) for s in [(64, 2), (2, 128)])
    shapes = {"model.layers.1.mlp.down_proj": (HIDDEN_UNITS, 64), "model.layers.1.mlp.up_proj": (64, HIDDEN_UNITS)}
    grown = fitted({"model.layers.1.mlp.down_proj": (a, b), "model.layers.1.mlp.up_proj": (up_a, up_b)}, shapes)
    down_a, down_b = grown["model.layers.1.mlp.down_proj"]
    assert down_a.shape == (HIDDEN_UNITS, 2) and mx.all(down_a[128:] == 0).item() and mx.array_equal(down_a[:128], a)
    new_a, new_b = grown["model.layers.1.mlp.up_proj"]
    assert new_b.shape == (2, HIDDEN_UNITS) and mx.array_equal((up_a @ up_b), (new_a @ new_b)[:, :128])

import json

import mlx.core as mx
import mlx.nn as nn
import mlx_lm

from edge_repair.edits import store
from edge_repair.edits.fuse import fuse_edits
from edge_repair.loading import load_patient
from tests.test_edits import random_edit
from tests.test_cli import one_line_error, run

TOKENS = mx.array([[5, 40, 77, 120, 9, 200]])
PROBES = ["hello there", "what is this?"]


def healed(base, seed=3, scale=1.0):
    patient = load_patient(str(base))
    store.record_edit(patient, random_edit(patient.model, layers=(2, 3), rank=4, seed=seed, scale=scale), probes=PROBES)
    store.apply_active_edits(patient)
    return patient


def test_default_fuse_keeps_edited_modules_float_and_still_forgets(tiny_quantized_dir, tmp_path):
    patient = healed(tiny_quantized_dir)
    report = fuse_edits(tiny_quantized_dir, tmp_path / "fused")
    edited = sorted(store.show_edit(store.list_edits()[0]["id"])["modules"])
    assert report["float_modules"] == edited
    config = json.loads((tmp_path / "fused" / "config.json").read_text())
    assert all(config["quantization"][m] is False for m in edited)
    fused, _ = mlx_lm.load(str(tmp_path / "fused"))
    assert isinstance(fused.model.layers[2].mlp.gate_proj, nn.Linear)
    assert isinstance(fused.model.layers[0].mlp.gate_proj, nn.QuantizedLinear)  # untouched, as it was
    assert mx.allclose(fused(TOKENS), patient.model(TOKENS), atol=1e-3).item()
    assert report["probes"] == 2 and all(c["forgotten_by_adapter"] for c in report["checks"])
    assert report["survives"] and all(c["same_as_adapter"] for c in report["checks"])


def test_requantize_all_requantizes_and_reports(tiny_quantized_dir, tmp_path):
    healed(tiny_quantized_dir)
    code, out, err = run("edits", "fuse", "--model", str(tiny_quantized_dir), "--out", str(tmp_path / "q"),
                         "--requantize-all", "--yes", "--json")
    assert code == 0, err
    report = json.loads(out)
    assert report["float_modules"] == [] and report["requantized"] == "all"
    config = json.loads((tmp_path / "q" / "config.json").read_text())
    assert not any(v is False for v in config["quantization"].values())
    survived = all(c["forgotten_after_fuse"] for c in report["checks"] if c["forgotten_by_adapter"])
    assert report["survives"] == survived and len(report["checks"]) == 2


def test_fuse_refuses_a_used_out_dir_and_a_model_without_edits(tiny_quantized_dir, tmp_path):
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("x")
    code, _, err = run("edits", "fuse", "--model", str(tiny_quantized_dir), "--out", str(tmp_path / "used"), "--yes")
    assert code == 5 and one_line_error(err)  # no edits yet
    healed(tiny_quantized_dir)
    code, _, err = run("edits", "fuse", "--model", str(tiny_quantized_dir), "--out", str(tmp_path / "used"), "--yes")
    assert code == 2 and one_line_error(err)
    assert (tmp_path / "used" / "x").read_text() == "x"

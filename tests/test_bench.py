"""`edge-repair bench`: the three benchmarks run end to end on the tiny random model (nothing timed is asserted)."""

import json

import mlx.core as mx
import numpy as np
import pytest
from typer.testing import CliRunner

from edge_repair.bench import baselines, memory, report, scaling, training
from edge_repair.cli import app
from edge_repair.datasets import facts
from edge_repair.engine.forget import EngineConfig
from edge_repair.loading import load_patient

SMALL = EngineConfig(retain_probes=2, negatives=4, max_tries=1, verify_tokens=4)


def test_memory_phases_have_positive_byte_counts(tiny_model_dir, tmp_path):
    result = memory.run_memory(str(tiny_model_dir), chat_tokens=4, config=SMALL)
    assert list(result["memory"]) == list(memory.PHASES)
    for phase in result["memory"].values():
        assert phase["mlx_peak_bytes"] > 0 and phase["rss_peak_bytes"] > 0
    assert result["forget_over_chat"] > 0
    assert {p["role"] for p in result["memory"].values()} == set(memory.ROLES.values()) == set(result["roles"])
    assert result["roles"]["watchdog"] == max(result["memory"][n]["mlx_peak_bytes"] for n in ("watchdog-prepare",
                                                                                             "watchdog"))
    assert result["device"]["model"]["bytes"] > 0 and result["device"]["mlx"]
    assert "Memory per phase" in report.memory_markdown(result)
    written = report.write_results("memory", result, tmp_path / "results")
    assert json.loads(written[1].read_text())["memory"]["save"]["mlx_peak_bytes"] > 0


def test_scaling_runs_on_tiny_sizes():
    result = scaling.run_scaling(ranks=(2, 4), dims=(16, 32, 64), runs=1, rank_for_dims=4, dim_for_ranks=32)
    assert [r["d"] for r in result["by_dim"]] == [16, 32, 64]
    assert all(r[f"{name}_s"] > 0 for r in result["by_dim"] + result["by_rank"] for name in scaling.SOLVES)
    assert set(result["slopes_vs_d"]) == {"stamp", "stamp_lr", "stamp_gram", "stamp_lr_gram"}
    assert "STAMP-LR, cached Gram" in report.scaling_markdown(result)


def test_edit_scaling_edits_random_models_of_each_width(tmp_path):
    result = scaling.run_edit_scaling(dims=(64, 128), ranks=(2, 4), rank_for_dims=4, dim_for_ranks=64, layers=2,
                                      layer=1, retain_tokens=64, runs=2, workdir=tmp_path)
    rows = result["edits_by_dim"]
    assert [(r["d"], r["method"], r["rank"]) for r in rows] == [(64, "stamp", None), (64, "stamp-lr", 4),
                                                                (128, "stamp", None), (128, "stamp-lr", 4)]
    # The solve's width is the loaded model's MLP: 8d/3 rounded to 64, plus the spare neurons.
    assert [r["solve_width"] for r in rows[::2]] == [scaling.intermediate_size(d) + 32 for d in (64, 128)]
    for r in rows + result["edits_by_rank"]:
        assert r["seconds"] >= r["solve_s"] > 0 and r["forget_rows"] > 0 and r["retain_rows"] >= 64
        assert r["runs"] == 2
        assert r["solve_numpy_peak_bytes"] > 0 and r["mlx_active_bytes"] > 0
    # STAMP's update is dense (d_ff × d, then d × d); STAMP-LR's is rank r: (d_ff + d) · r floats.
    assert rows[1]["edit_bytes"] == 4 * 4 * (rows[1]["solve_width"] + 64) < rows[0]["edit_bytes"]
    assert [r["rank"] for r in result["edits_by_rank"]] == [2, 4]
    assert list(tmp_path.iterdir()) == []  # the models are deleted
    assert "Whole edits vs rank r" in report.scaling_markdown({**scaling.run_scaling(
        ranks=(2,), dims=(16, 32), runs=1, rank_for_dims=2, dim_for_ranks=16), **result})


def test_slope_recovers_an_exponent():
    assert scaling.slope([1, 2, 4, 8], [1, 8, 64, 512]) == 3.0


def test_a_ga_step_lowers_the_answer_log_prob(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir))
    fact = facts()[0]
    forget = training.make_batch(patient.tokenizer, [fact["question"]], [f"The answer is {fact['answer']}."])
    retain = training.make_batch(patient.tokenizer, ["Write a haiku."], ["Leaves fall."])
    before = training.sequence_logprob(patient.model, forget).item()
    with training.trained(patient, "ga", forget, retain, layers=[2, 3], steps=1, lr=1e-3) as history:
        during = training.sequence_logprob(patient.model, forget).item()
    assert len(history) == 1 and during < before
    assert abs(training.sequence_logprob(patient.model, forget).item() - before) < 1e-3  # restored


@pytest.mark.parametrize("method", ["ga", "npo"])
def test_the_lean_baselines_train_exactly_like_the_plain_ones(tiny_model_dir, method):
    """Frozen blocks run once and the head only at reply tokens: the same losses, the same weights."""
    patient = load_patient(str(tiny_model_dir), compute="f32")
    prompts = [f["question"] for f in facts()[:3]]
    forget = training.make_batch(patient.tokenizer, prompts, ["It is A.", "The answer, as far as I know, is B.", "C"])
    retain = training.make_batch(patient.tokenizer, ["Write a haiku.", "Name a colour."], ["Leaves fall.", "Blue"])
    assert forget.picked.sum().item() == forget.answer.sum().item()
    trained = {}
    for name in (method, f"{method}-lean"):
        with training.trained(patient, name, forget, retain, layers=[2, 3], steps=3, lr=1e-3) as history:
            trained[name] = (history, np.array(patient.model.layers[3].mlp.down_proj.weight))
    (plain, w_plain), (lean, w_lean) = trained.values()
    assert plain[0] != plain[-1] and np.allclose(plain, lean, atol=1e-3)
    assert np.allclose(w_plain, w_lean, atol=1e-5)


def test_baselines_rows_on_the_tiny_model(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir))
    result = baselines.run_baselines(patient=patient, methods=("ga", "npo", "rmu", "stamp-lr"), steps=1,
                                     others=2, config=SMALL, only_produced=False, implant_steps=2)
    names = [(m["task"], m["method"]) for m in result["methods"]]
    assert names == [(t, m) for t in baselines.TASKS for m in ["base", "ga", "npo", "rmu", "stamp-lr"]]
    for row in result["methods"]:
        assert {"method", "seconds", "peak_memory_bytes", "forgot", "others_kept", "ppl"} <= set(row)
        assert 0 <= row["forgot"] <= 1 and row["ppl"] > 0
    assert all(m["peak_memory_bytes"] > 0 for m in result["methods"] if m["method"] != "base")
    personal = [m for m in result["methods"] if m["task"] == "personal"]
    assert all(0 <= m["f_rl"] <= 1 and 0 <= m["r_rl"] <= 1 for m in personal)
    assert all(m["f_rl"] is None for m in result["methods"] if m["task"] != "personal")
    assert result["implant"]["steps"] == 2 and "| personal | ga |" in report.baselines_markdown(result)
    for task, speedup in zip(baselines.TASKS, result["speedups"]):  # each baseline's seconds over stamp-lr's
        rows = {m["method"]: m for m in result["methods"] if m["task"] == task}
        assert speedup["task"] == task and speedup["method"] == "stamp-lr"
        assert speedup["closed_form"]["npo"] == round(rows["npo"]["seconds"] / rows["stamp-lr"]["solve_seconds"], 1)
        assert speedup["whole"].keys() == {"ga", "npo", "rmu"}
    assert "## Speed-up over each training baseline" in report.baselines_markdown(result)
    mx.eval(patient.model.parameters())


def test_misinformation_items_remove_the_wrong_answer_and_pick_evenly():
    items = baselines.task_items("misinformation")
    assert all(i["answer"] and i["question"] and "heldout_paraphrase" not in i for i in items)
    assert baselines.task_items("knowledge")[0]["answer"]
    assert [i["id"] for i in baselines.evenly(items, 3)] == [items[0]["id"], items[5]["id"], items[10]["id"]]


def test_cli_scaling_json_and_a_bad_option():
    runner = CliRunner()
    bad = runner.invoke(app, ["bench", "baselines", "--methods", "sgd"])
    assert bad.exit_code == 2 and "unknown method" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["bench", "baselines", "--tasks", "poetry"])
    assert bad.exit_code == 2 and "poetry" in bad.output and "Traceback" not in bad.output
    bad = runner.invoke(app, ["bench", "scaling", "--runs", "0"])
    assert bad.exit_code == 2

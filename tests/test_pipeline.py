import json

import pytest
from typer.testing import CliRunner

from edge_repair.cli import app
from edge_repair.engine.lowrank import current_factors
from edge_repair.pipeline.edits_api import list_edits, record_edit
from edge_repair.pipeline.pipeline import Pipeline
from edge_repair.pipeline.surgeon import Surgeon
from edge_repair.pipeline.watchdog import Watchdog, WatchdogConfig
from tests.pipeline_fakes import FakeEngine


@pytest.fixture
def patient(tiny_model_dir):
    from edge_repair.loading import load_patient

    return load_patient(str(tiny_model_dir))


def make_pipeline(patient, engine, record=record_edit):
    return Pipeline(patient, Watchdog(None, WatchdogConfig(mode="rules")), Surgeon(None), engine, record,
                    lambda: ["What do bees make?"])


def test_a_request_is_planned_edited_verified_and_recorded(patient):
    engine = FakeEngine()
    outcome = make_pipeline(patient, engine).run("Forget everything about Maya Taylor", [], lambda pair: True)
    assert outcome.detected and outcome.verified and outcome.edit_id
    request = engine.requests[0]
    assert request.prompt == "Tell me about Maya Taylor." and request.subject == "Maya Taylor" and request.paraphrases
    assert engine.retain == [["What do bees make?"]]
    assert [row["id"] for row in list_edits()] == [outcome.edit_id]
    assert set(outcome.stages) == {"watchdog", "surgeon", "engine", "persist"}


def test_chat_is_not_edited(patient):
    engine = FakeEngine()
    outcome = make_pipeline(patient, engine).run("Don't forget to call mum", [], lambda pair: True)
    assert not outcome.detected and engine.requests == [] and outcome.edit_id is None


def test_declining_changes_nothing(patient):
    engine = FakeEngine()
    outcome = make_pipeline(patient, engine).run("Forget Maya Taylor", [], lambda pair: False)
    assert outcome.detected and not outcome.confirmed and engine.requests == []


def test_an_unverified_edit_is_rolled_back_and_not_recorded(patient):
    before = current_factors(patient.model)
    outcome = make_pipeline(patient, FakeEngine(verified=False)).run("Forget Maya Taylor", [], lambda pair: True)
    assert not outcome.verified and outcome.edit_id is None and "not be verified" in outcome.note
    assert "still came out" in outcome.note and "Maya" not in outcome.note  # why, in counts, never the text
    assert set(current_factors(patient.model)) == set(before) and list_edits() == []


def test_summary_never_contains_the_forgotten_text(patient):
    outcome = make_pipeline(patient, FakeEngine()).run("Forget everything about Maya Taylor", [], lambda pair: True)
    summary = outcome.summary()
    assert "Maya" not in json.dumps(summary)
    assert summary["verification"]["verified"] is outcome.verified is True  # what was verified, as counts


runner = CliRunner()


def test_cli_not_a_request_is_exit_0_detected_false(tiny_model_dir):
    result = runner.invoke(app, ["forget", "I forgot my keys", "--model", str(tiny_model_dir), "--json", "--yes"])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["detected"] is False and payload["edit_id"] is None


def test_cli_direct_pair_mode(tiny_model_dir, monkeypatch):
    monkeypatch.setattr("edge_repair.pipeline.pipeline.PreparedEngine", FakeEngine)
    result = runner.invoke(app, ["forget", "--prompt", "What is the capital of France?", "--yes", "--json",
                                 "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.stderr
    payload = json.loads(result.stdout)
    assert payload["edit_id"] and payload["verified"] and payload["layer"] == [1] and payload["rank"] == 2
    assert "seconds" in payload and "France" not in result.stdout


def test_cli_history_pointer_request(tiny_model_dir, monkeypatch, tmp_path):
    engine = FakeEngine()
    monkeypatch.setattr("edge_repair.pipeline.pipeline.PreparedEngine", lambda: engine)
    history = tmp_path / "h.json"
    history.write_text(json.dumps([{"role": "user", "content": "What is the pH of water?"},
                                   {"role": "assistant", "content": "The pH of water is 5."}]))
    result = runner.invoke(app, ["forget", "That is incorrect. Remove this.", "--history", str(history), "--yes",
                                 "--model", str(tiny_model_dir)])
    assert result.exit_code == 0, result.stderr
    assert "incorrect information has been removed" in result.stdout
    assert engine.requests[0].response == "The pH of water is 5."


def test_cli_without_yes_and_without_terminal_refuses(tiny_model_dir):
    result = runner.invoke(app, ["forget", "Forget Maya Taylor", "--model", str(tiny_model_dir)])
    assert result.exit_code == 2 and "--yes" in result.stderr


def test_cli_bad_history_is_one_line(tiny_model_dir, tmp_path):
    bad = tmp_path / "h.json"
    bad.write_text('{"role": "user"}')
    result = runner.invoke(app, ["forget", "Forget it", "--history", str(bad), "--model", str(tiny_model_dir)])
    assert result.exit_code == 2 and result.stderr.startswith("error: ")


def test_prepared_engine_unseals_the_bank_once_per_retain_sample(monkeypatch):
    from edge_repair.engine import forget as engine
    from edge_repair.pipeline.pipeline import PreparedEngine

    built, used = [], []
    monkeypatch.setattr(engine, "prepare", lambda patient, retain: built.append(list(retain)) or f"bank{len(built)}")
    monkeypatch.setattr(engine, "forget", lambda patient, request, retain, bank: used.append(bank))
    run = PreparedEngine()
    run("patient", "request", ["a", "b"])
    run("patient", "request", ["a", "b"])
    run("patient", "request", ["a", "c"])
    assert built == [["a", "b"], ["a", "c"]] and used == ["bank1", "bank1", "bank2"]

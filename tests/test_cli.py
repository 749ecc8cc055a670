import json

from typer.testing import CliRunner

from edge_repair.cli import app

runner = CliRunner()


def run(*args):
    result = runner.invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def one_line_error(stderr):
    """Exactly one error line (status lines may precede it) and no traceback."""
    lines = [l for l in stderr.strip().splitlines() if not l.startswith("[edge-repair]")]
    return len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in stderr


def test_ask_json_on_tiny_model(tiny_model_dir):
    code, out, err = run("ask", "hello", "--model", str(tiny_model_dir), "--max-tokens", "5", "--json")
    assert code == 0, err
    payload = json.loads(out)
    assert isinstance(payload["answer"], str)


def test_ask_streams_plain_text(tiny_quantized_dir):
    code, out, err = run("ask", "hello", "--model", str(tiny_quantized_dir), "--max-tokens", "4")
    assert code == 0, err
    assert out.endswith("\n")


def test_empty_prompt_is_one_line_exit_2(tiny_model_dir):
    code, _, err = run("ask", "   ", "--model", str(tiny_model_dir))
    assert code == 2 and one_line_error(err)


def test_prompt_over_context_is_rejected(tiny_model_dir):
    code, _, err = run("ask", "word " * 400, "--model", str(tiny_model_dir))
    assert code == 2 and one_line_error(err) and "context" in err


def test_huge_prompt_is_rejected_before_tokenizing(tiny_model_dir):
    code, _, err = run("ask", "x" * 40_000, "--model", str(tiny_model_dir))
    assert code == 2 and one_line_error(err)


def test_missing_model_exit_3(tmp_path):
    code, _, err = run("ask", "hi", "--model", str(tmp_path / "nowhere"))
    assert code == 3 and one_line_error(err)


def test_repo_id_not_downloaded_says_how_to_pull():
    code, _, err = run("ask", "hi", "--model", "mlx-community/not-here-4bit")
    assert code == 3 and one_line_error(err) and "models pull" in err


def test_corrupt_weights_exit_3(tiny_model_dir, tmp_path):
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in tiny_model_dir.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    code, _, err = run("ask", "hi", "--model", str(broken))
    assert code == 3 and one_line_error(err)


def test_unknown_architecture_exit_3(tiny_model_dir, tmp_path):
    other = tmp_path / "other"
    other.mkdir()
    for f in tiny_model_dir.iterdir():
        (other / f.name).write_bytes(f.read_bytes())
    config = json.loads((other / "config.json").read_text())
    config["model_type"] = "not-a-real-architecture"
    (other / "config.json").write_text(json.dumps(config))
    code, _, err = run("ask", "hi", "--model", str(other))
    assert code == 3 and one_line_error(err)


def test_not_a_gguf_file_exit_3(tmp_path):
    bogus = tmp_path / "model.gguf"
    bogus.write_bytes(b"GGUF" + b"\0" * 20)
    code, _, err = run("ask", "hi", "--model", str(bogus))
    assert code == 3 and one_line_error(err)


def test_unwritable_home_exit_4(tiny_model_dir, tmp_path, monkeypatch):
    blocker = tmp_path / "file-not-dir"
    blocker.write_text("x")
    monkeypatch.setenv("EDGE_REPAIR_HOME", str(blocker / "home"))
    code, _, err = run("ask", "hi", "--model", str(tiny_model_dir))
    assert code == 4 and one_line_error(err)


def test_models_list_json(tiny_model_dir):
    code, out, err = run("models", "list", "--json")
    assert code == 0, err
    assert isinstance(json.loads(out), list)

import json

import mlx.core as mx
import mlx_lm
import pytest

from edge_repair.edits import store
from edge_repair.edits.adapters import module_shapes
from edge_repair.engine.lowrank import LowRankEdit, set_factors, stack
from edge_repair.errors import EditError, StateError
from edge_repair.loading import load_patient
from edge_repair.paths import home_dir
from tests.test_cli import one_line_error, run
from tests.tiny import make_model_dir

TOKENS = mx.array([[5, 40, 77, 120, 9, 200]])
PREFIX = "model.layers."


def random_edit(model, layers=(1,), rank=2, seed=0, keys=("mlp.gate_proj", "mlp.down_proj"), scale=0.5, info=None):
    """A random edit of the given layers (also used by the crash test's child processes)."""
    shapes = module_shapes(model)
    mx.random.seed(seed)
    factors = {}
    for layer in layers:
        for key in keys:
            in_dims, out_dims = shapes[f"{PREFIX}{layer}.{key}"]
            factors[f"{PREFIX}{layer}.{key}"] = (mx.random.normal((in_dims, rank)) * scale,
                                                  mx.random.normal((rank, out_dims)) * scale)
    return LowRankEdit(factors, info if info is not None else {"method": "stamp-lr", "verified": True, "rank": rank})


def logits(model):
    return model(TOKENS)


@pytest.mark.parametrize("base", ["tiny_model_dir", "tiny_quantized_dir"])
def test_stacked_adapter_loads_in_stock_mlx_lm_and_matches(base, request):
    base = request.getfixturevalue(base)
    patient = load_patient(str(base))
    plain = logits(patient.model)
    first = store.record_edit(patient, random_edit(patient.model, layers=(1,), rank=2, seed=1))
    second = store.record_edit(patient, random_edit(patient.model, layers=(3,), rank=3, seed=2, keys=("mlp.up_proj",)))
    assert store.apply_active_edits(patient) == [first, second]
    ours = logits(patient.model)
    rows = store.list_edits(base)
    assert [r["id"] for r in rows] == [first, second]
    model, tokenizer = mlx_lm.load(rows[0]["stock_base_model"], adapter_path=rows[0]["adapter_path"])
    theirs = logits(model)
    assert mx.abs(ours - plain).max().item() > 1e-2  # the edits do something
    assert mx.allclose(ours, theirs, atol=1e-4).item()
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hello"}], add_generation_prompt=True)
    from edge_repair.generation import reply

    assert mlx_lm.generate(model, tokenizer, prompt, max_tokens=8).strip() == \
        reply(patient, [{"role": "user", "content": "hello"}], 8)


def test_undo_of_a_middle_edit_keeps_the_others(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir))
    edits = [random_edit(patient.model, layers=(i,), rank=2, seed=i) for i in (0, 1, 2)]
    ids = [store.record_edit(patient, e) for e in edits]
    store.apply_active_edits(patient)
    all_three = logits(patient.model)
    store.undo_edit(ids[1][:5])
    assert [r["id"] for r in store.list_edits()] == [ids[0], ids[2]]
    fresh = load_patient(str(tiny_model_dir))
    store.apply_active_edits(fresh)
    set_factors(patient.model, stack([edits[0].factors, edits[2].factors]))
    assert mx.allclose(logits(fresh.model), logits(patient.model), atol=1e-5).item()
    assert mx.abs(logits(fresh.model) - all_three).max().item() > 1e-2
    row = store.list_edits()[0]
    config = json.loads((home_dir() / "adapters" / row["adapter_path"].rsplit("/", 1)[1] / "adapter_config.json").read_text())
    assert config["edits"] == [ids[0], ids[2]]
    for edit_id in (ids[0], ids[2]):
        store.undo_edit(edit_id)
    store.apply_active_edits(fresh)
    assert mx.allclose(logits(fresh.model), logits(load_patient(str(tiny_model_dir)).model), atol=1e-5).item()
    assert not list((home_dir() / "adapters").iterdir()) and not list((home_dir() / "edits").iterdir())


def test_shared_factors_are_stored_once_and_leave_with_the_last_edit(tiny_model_dir):
    from edge_repair.errors import InputError

    patient = load_patient(str(tiny_model_dir))
    shared = random_edit(patient.model, layers=(2,), rank=1, seed=9).factors
    edits = [random_edit(patient.model, layers=(i,), rank=2, seed=i) for i in (0, 1)]
    ids = [store.record_edit(patient, LowRankEdit(e.factors, e.info, shared)) for e in edits]
    assert [r["id"] for r in store.list_edits()] == ids and store.apply_active_edits(patient) == ids
    ledger = json.loads((home_dir() / "ledger.json").read_text())
    shared_ids = [e["id"] for e in ledger["edits"] if e.get("kind") == "shared"]
    assert len(shared_ids) == 1  # the second edit brought the same factors: not stacked twice
    with pytest.raises(InputError):
        store.undo_edit(shared_ids[0])  # never undone on its own
    store.undo_edit(ids[0])
    fresh = load_patient(str(tiny_model_dir))
    store.apply_active_edits(fresh)
    set_factors(patient.model, stack([shared, edits[1].factors]))
    assert mx.allclose(logits(fresh.model), logits(patient.model), atol=1e-5).item()
    assert (home_dir() / "bases").is_dir() and len(list((home_dir() / "bases").iterdir())) == 1  # the stock base
    store.undo_edit(ids[1])
    assert json.loads((home_dir() / "ledger.json").read_text())["edits"] == []
    assert not list((home_dir() / "edits").iterdir()) and not list((home_dir() / "bases").iterdir())


def test_adapter_refuses_another_base(tiny_model_dir, tmp_path):
    other = make_model_dir(tmp_path / "other", seed=7)
    patient = load_patient(str(tiny_model_dir))
    store.record_edit(patient, random_edit(patient.model))
    foreign = load_patient(str(other))
    assert store.apply_active_edits(foreign) == []
    with pytest.raises(StateError, match="belongs to base model"):
        store.apply_adapter(foreign, store.list_edits()[0]["adapter_path"])
    store.apply_adapter(patient, store.list_edits()[0]["adapter_path"])


def test_bad_edits_are_refused(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir))
    edit = random_edit(patient.model)
    a, b = edit.factors["model.layers.1.mlp.gate_proj"]
    edit.factors["model.layers.1.mlp.gate_proj"] = (a.T, b)
    with pytest.raises(EditError, match="shapes"):
        store.record_edit(patient, edit)
    with pytest.raises(EditError):
        store.record_edit(patient, random_edit(patient.model, layers=()))
    assert store.list_edits() == []


def test_forgotten_text_leaves_no_trace_in_home(tiny_model_dir, monkeypatch):
    from edge_repair.retain import buffer as retain

    monkeypatch.setattr(retain, "shipped_prompts", lambda: ["Where was Maya Taylor born?", "Who wrote Hamlet?"])
    prompt, response, subject = "Who employs Maya Taylor?", "Maya Taylor works at Quantix Labs.", "Maya Taylor"
    secrets = [prompt, response, subject, "Quantix", "maya taylor"]
    buffer = retain.RetainBuffer.open()
    buffer.add_turns([f"remind me: {response}", "what's for dinner?", prompt], consent=True, ratio=1.0)
    patient = load_patient(str(tiny_model_dir))
    info = {"method": "stamp-lr", "verified": True, "note": prompt, "subject": subject}
    edit_id = store.record_edit(patient, random_edit(patient.model, info=info), probes=[prompt, "Maya Taylor's employer?"],
                                scrub=[prompt, response, subject])
    run("edits", "list", "--json")
    run("edits", "show", edit_id, "--json")
    assert found_in(home_dir(), "Quantix") == []  # nothing in the clear anywhere under the home
    for text in secrets:
        assert found_in(home_dir(), text) == [], text
    assert store.read_probes(edit_id) == [prompt, "Maya Taylor's employer?"]  # kept, but sealed
    remaining = retain.RetainBuffer.open().prompts()
    assert remaining == ["Who wrote Hamlet?", "what's for dinner?"]
    assert set(store.show_edit(edit_id)["info"]) == {"method", "verified"}


def found_in(root, text):
    needle = text.lower().encode()
    return [str(p) for p in root.rglob("*") if p.is_file() and needle in p.read_bytes().lower()]


def test_grep_helper_finds_clear_text(tmp_path):
    (tmp_path / "log").write_text("... Maya Taylor ...")
    assert found_in(tmp_path, "maya taylor") == [str(tmp_path / "log")]


def test_cli_list_show_undo_json(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir))
    ids = [store.record_edit(patient, random_edit(patient.model, layers=(i,), seed=i)) for i in (1, 2)]
    code, out, err = run("edits", "list", "--json")
    assert code == 0, err
    rows = json.loads(out)
    assert [r["id"] for r in rows] == ids and all(r["status"] == "verified" for r in rows)
    mlx_lm.load(rows[0]["stock_base_model"], adapter_path=rows[0]["adapter_path"])
    code, out, _ = run("edits", "list", "--model", str(tiny_model_dir))
    assert code == 0 and ids[0] in out and ids[1] in out
    code, out, _ = run("edits", "show", ids[1], "--json")
    assert code == 0 and json.loads(out)["layers"] == [2]
    code, out, err = run("edits", "undo", ids[0], "--yes", "--json")
    assert code == 0 and json.loads(out) == {"undone": ids[0]}, err
    assert [r["id"] for r in json.loads(run("edits", "list", "--json")[1])] == [ids[1]]
    code, _, err = run("edits", "undo", "ffffffff", "--yes")
    assert code == 2 and one_line_error(err)


def test_damaged_ledger_is_one_line_exit_4():
    (home_dir() / "ledger.json").write_text('{"version": 1, "edits": [')
    code, _, err = run("edits", "list")
    assert code == 4 and one_line_error(err)


def test_damaged_edit_factors_are_reported(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir))
    edit_id = store.record_edit(patient, random_edit(patient.model))
    factors = home_dir() / "edits" / edit_id / "factors.safetensors"
    factors.write_bytes(factors.read_bytes()[:100])
    with pytest.raises(StateError, match=f"edits undo {edit_id}"):
        store.apply_active_edits(patient)
    store.undo_edit(edit_id)  # the way out works even when the edit is damaged
    assert store.apply_active_edits(patient) == []


@pytest.mark.slow
def test_real_model_adapter_matches_in_stock_mlx_lm(default_model_dir):
    patient = load_patient(str(default_model_dir))
    store.record_edit(patient, random_edit(patient.model, layers=(16,), rank=4, scale=0.05))
    store.apply_active_edits(patient)
    row = store.list_edits(default_model_dir)[0]
    model, _ = mlx_lm.load(row["stock_base_model"], adapter_path=row["adapter_path"])
    ours, theirs = patient.model(TOKENS), model(TOKENS).astype(mx.float32)
    assert mx.argmax(ours[0, -1]).item() == mx.argmax(theirs[0, -1]).item()
    assert mx.abs(ours - theirs).max().item() < 0.05 * mx.abs(ours).max().item()


def test_a_base_folder_gone_leaves_the_edits_listed(tmp_path):
    base = make_model_dir(tmp_path / "gone")
    patient = load_patient(str(base))
    first = store.record_edit(patient, random_edit(patient.model, layers=(1,), seed=1))
    copy = store.list_edits()[0]["stock_base_model"]
    assert copy and copy != str(base.resolve())  # the stock copy with the spare neurons
    second = store.record_edit(patient, random_edit(patient.model, layers=(2,), seed=2))
    import shutil

    shutil.rmtree(base)
    store.undo_edit(first)  # the adapter is rebuilt without the base's folder
    rows = store.list_edits()
    assert [r["id"] for r in rows] == [second] and rows[0]["stock_base_model"] == copy

"""SIGKILL a process that keeps recording and undoing edits, at random moments: the home must always load."""

import json
import multiprocessing
import os
import random
import time

import mlx_lm

from edge_repair.edits import store
from edge_repair.edits.ledger import read_ledger
from edge_repair.loading import load_patient
from edge_repair.paths import home_dir

TRIES = 24
PRELOAD = ["edge_repair", "edge_repair.edits.store", "edge_repair.loading", "mlx_lm.models.llama", "tests.test_edits"]


def keep_editing(model_dir: str, home: str, key: str, ready, seed: int) -> None:
    os.environ.update(EDGE_REPAIR_HOME=home, EDGE_REPAIR_KEY=key)
    from edge_repair.edits import store
    from edge_repair.loading import load_patient
    from tests.test_edits import random_edit

    patient = load_patient(model_dir)
    rng = random.Random(seed)
    ready.set()
    while True:
        ids = [r["id"] for r in store.list_edits()]
        if len(ids) > 3 and rng.random() < 0.5:
            store.undo_edit(rng.choice(ids))
        else:
            edit = random_edit(patient.model, layers=(rng.randrange(4),), rank=rng.randint(1, 4), seed=rng.randrange(1 << 30))
            store.record_edit(patient, edit, probes=["a private probe"], scrub=["a private subject"])


def test_sigkill_at_random_points_never_breaks_the_home(tiny_model_dir):
    # Children fork from a server that imported mlx-lm once: each try costs milliseconds, not seconds.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(PRELOAD)
    home, rng, seen, torn = home_dir(), random.Random(0), set(), 0
    patient = load_patient(str(tiny_model_dir))
    for attempt in range(TRIES):
        ready = context.Event()
        child = context.Process(target=keep_editing, args=(str(tiny_model_dir), str(home), os.environ["EDGE_REPAIR_KEY"],
                                                           ready, attempt))
        child.start()
        assert ready.wait(60), "the editing process did not start"
        time.sleep(rng.uniform(0.0, 0.25))
        child.kill()
        child.join()
        assert child.exitcode == -9
        torn += bool(leftovers(home))
        check_home(home, patient)
        seen.update(e["id"] for e in read_ledger(home)["edits"])
    assert len(seen) >= 5  # the children did get edits in between kills
    assert torn >= 1, "no kill landed inside a write; the test did not exercise recovery"


def leftovers(home) -> list[str]:
    """Traces of an interrupted write: temp files and folders, or an adapter behind the ledger."""
    ids = [e["id"] for e in read_ledger(home)["edits"]]
    found = [p.name for p in home.rglob("*") if ".tmp-" in p.name or ".link-" in p.name]
    if (home / "edits").is_dir():
        found += [p.name for p in (home / "edits").iterdir() if p.name not in ids]
    links = [p for p in (home / "adapters").iterdir() if p.is_symlink()] if (home / "adapters").is_dir() else []
    configs = [json.loads((link / "adapter_config.json").read_text())["edits"] for link in links]
    return found + ([] if configs == ([ids] if ids else []) else ["stale adapter"])


def check_home(home, patient) -> None:
    ledger = read_ledger(home)
    ids = [e["id"] for e in ledger["edits"]]
    assert store.apply_active_edits(patient) == ids
    rows = store.list_edits()  # also repairs an adapter left stale by the kill
    assert [r["id"] for r in rows] == ids
    for edit_id in ids:
        assert (home / "edits" / edit_id / "factors.safetensors").is_file()
        assert store.read_probes(edit_id) == ["a private probe"]
    if rows:
        mlx_lm.load(rows[0]["stock_base_model"], adapter_path=rows[0]["adapter_path"])

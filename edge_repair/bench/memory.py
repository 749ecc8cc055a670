"""Memory per phase and per role of one forget, as a user runs it: load, chat (the patient), the
watchdog reading the request, the surgeon's plan, the engine's edit, save (the on-device claim of
Table 1). Every role uses the patient's own model, as the CLI and chat do.

MLX peak is reset before each phase, so it is the phase's own. The OS peak RSS is a
process-lifetime maximum (it can only grow), so the current RSS after each phase is kept too.
"""

import os
import secrets
import tempfile
import time
from contextlib import contextmanager

import mlx.core as mx

from edge_repair.bench.device import current_rss_bytes, device_info, peak_rss_bytes
from edge_repair.progress import status

PHASES = ("load", "chat", "watchdog-prepare", "watchdog", "surgeon", "prepare", "forget", "save")
# Who does each phase's work: one model serves every role, so loading is shared.
ROLES = {"load": "all", "chat": "patient", "watchdog-prepare": "watchdog", "watchdog": "watchdog",
         "surgeon": "surgeon", "prepare": "engine", "forget": "engine", "save": "store"}
FORGET_MESSAGE = "Please forget what you just told me."
TARGET_RATIO = 1.3  # forget peak / chat peak
METHODS = [
    "mlx_peak_bytes: mx.reset_peak_memory() before the phase, mx.get_peak_memory() after (at least what was "
    "in use when the phase began)",
    "rss_peak_bytes: resource.getrusage(RUSAGE_SELF).ru_maxrss after the phase (process-lifetime max)",
    "rss_now_bytes: /proc/self/statm resident pages after the phase (Linux only)",
    "chat: one greedy reply to datasets.facts()[0]; watchdog-prepare: its request probe, read from the models "
    "cache or fitted once per model; watchdog: Watchdog.inspect of FORGET_MESSAGE after that exchange; surgeon: "
    "Surgeon.plan of the pair it read; prepare: the once-per-model negative bank (engine.negatives.load_or_build); "
    "forget: engine.forget.forget of the plan's request with that bank; save: edits.store.record_edit",
    "roles: each role's peak is the largest MLX peak of its phases",
    "the whole run uses a temporary EDGE_REPAIR_HOME and an ephemeral key (nothing touches the real home)",
]


@contextmanager
def _measured(rows: dict, name: str):
    status(f"memory: {name}")
    mx.synchronize()
    mx.reset_peak_memory()
    # The reset peak is 0 until something is allocated: a phase that allocates nothing (a probe read
    # from disk) still holds what was in use when it began.
    held = mx.get_active_memory()
    start = time.perf_counter()
    yield
    mx.synchronize()
    rows[name] = {"role": ROLES[name], "seconds": round(time.perf_counter() - start, 3),
                  "mlx_peak_bytes": int(max(mx.get_peak_memory(), held)),
                  "mlx_active_bytes": int(mx.get_active_memory()), "rss_peak_bytes": peak_rss_bytes(),
                  "rss_now_bytes": current_rss_bytes()}


@contextmanager
def temporary_home():
    """A throw-away home and key: caches and edits made by a benchmark vanish with it."""
    saved = {k: os.environ.get(k) for k in ("EDGE_REPAIR_HOME", "EDGE_REPAIR_KEY")}
    with tempfile.TemporaryDirectory(prefix="edge-repair-bench-") as home:
        os.environ["EDGE_REPAIR_HOME"] = home
        os.environ["EDGE_REPAIR_KEY"] = secrets.token_hex(32)
        try:
            yield home
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v


def run_memory(model: str | None = None, chat_tokens: int = 32, config=None, fact: dict | None = None) -> dict:
    """Measure each phase in this process; `config` (EngineConfig) lets tests shrink the forget."""
    from edge_repair.engine.forget import EngineConfig
    from edge_repair.loading import resolve

    path = resolve(model)  # may install the default first: not part of the load phase
    with temporary_home():
        return _phases(path, chat_tokens, config or EngineConfig(), fact)


def _phases(path, chat_tokens, config, fact) -> dict:
    from edge_repair import datasets
    from edge_repair.edits.store import record_edit
    from edge_repair.engine.forget import forget, prepare
    from edge_repair.generation import reply
    from edge_repair.loading import load_patient
    from edge_repair.pipeline.extract import ForgetPair
    from edge_repair.pipeline.plan import to_request
    from edge_repair.pipeline.surgeon import Surgeon
    from edge_repair.pipeline.watchdog import Watchdog

    rows: dict = {}
    with _measured(rows, "load"):
        patient = load_patient(str(path))
    fact = fact or datasets.facts()[0]
    question = [{"role": "user", "content": fact["question"]}]
    with _measured(rows, "chat"):
        answer = reply(patient, question, max_tokens=chat_tokens)
    watchdog, surgeon = Watchdog(patient), Surgeon(patient)
    with _measured(rows, "watchdog-prepare"):
        watchdog.prepare()
    with _measured(rows, "watchdog"):
        detection = watchdog.inspect(FORGET_MESSAGE, question + [{"role": "assistant", "content": answer}])
    rows["watchdog"]["detected"] = detection.pair is not None
    # A random test model's probe may not detect it: the later roles still get the exchange to work on.
    pair = detection.pair or ForgetPair(fact["question"], answer, fact.get("subject") or fact["question"], "history")
    with _measured(rows, "surgeon"):
        plan, _ = surgeon.plan(pair, len(patient.layers))
    retain = datasets.retain_prompts()
    with _measured(rows, "prepare"):
        bank = prepare(patient, retain, config)
    with _measured(rows, "forget"):
        result = forget(patient, to_request(plan, pair), retain, config, bank)
    rows["forget"]["verified"] = result.verification.verified
    with _measured(rows, "save"):
        record_edit(patient, result.edit)
    chat_peak = rows["chat"]["mlx_peak_bytes"]
    ratio = rows["forget"]["mlx_peak_bytes"] / chat_peak if chat_peak else None
    roles = {role: max(row["mlx_peak_bytes"] for row in rows.values() if row["role"] == role)
             for role in dict.fromkeys(ROLES.values())}
    return {"memory": rows, "roles": roles, "forget_over_chat": None if ratio is None else round(ratio, 3),
            "target_ratio": TARGET_RATIO, "device": device_info(patient.path), "methods": METHODS}

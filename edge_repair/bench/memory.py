"""Memory per phase of one forget: load, chat, forget, save (the on-device claim of Table 1).

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

PHASES = ("load", "chat", "prepare", "forget", "save")
TARGET_RATIO = 1.3  # forget peak / chat peak
METHODS = [
    "mlx_peak_bytes: mx.reset_peak_memory() before the phase, mx.get_peak_memory() after",
    "rss_peak_bytes: resource.getrusage(RUSAGE_SELF).ru_maxrss after the phase (process-lifetime max)",
    "rss_now_bytes: /proc/self/statm resident pages after the phase (Linux only)",
    "chat: one greedy reply; prepare: the once-per-model negative bank (engine.negatives.load_or_build); "
    "forget: engine.forget.forget on datasets.facts()[0] with that bank; save: edits.store.record_edit",
    "the whole run uses a temporary EDGE_REPAIR_HOME and an ephemeral key (nothing touches the real home)",
]


@contextmanager
def _measured(rows: dict, name: str):
    status(f"memory: {name}")
    mx.synchronize()
    mx.reset_peak_memory()
    start = time.perf_counter()
    yield
    mx.synchronize()
    rows[name] = {"seconds": round(time.perf_counter() - start, 3), "mlx_peak_bytes": int(mx.get_peak_memory()),
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
    from edge_repair.engine.forget import ForgetRequest, forget, prepare
    from edge_repair.generation import reply
    from edge_repair.loading import load_patient

    rows: dict = {}
    with _measured(rows, "load"):
        patient = load_patient(str(path))
    fact = fact or datasets.facts()[0]
    with _measured(rows, "chat"):
        reply(patient, [{"role": "user", "content": fact["question"]}], max_tokens=chat_tokens)
    request = ForgetRequest(prompt=fact["question"], paraphrases=fact.get("paraphrases", []),
                            subject=fact.get("subject"))
    retain = datasets.retain_prompts()
    with _measured(rows, "prepare"):
        bank = prepare(patient, retain, config)
    with _measured(rows, "forget"):
        result = forget(patient, request, retain, config, bank)
    rows["forget"]["verified"] = result.verification.verified
    with _measured(rows, "save"):
        record_edit(patient, result.edit)
    chat_peak = rows["chat"]["mlx_peak_bytes"]
    ratio = rows["forget"]["mlx_peak_bytes"] / chat_peak if chat_peak else None
    return {"memory": rows, "forget_over_chat": None if ratio is None else round(ratio, 3),
            "target_ratio": TARGET_RATIO, "device": device_info(patient.path), "methods": METHODS}

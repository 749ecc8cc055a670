"""RePAIR pipeline benchmark (paper Table 3) on the scripted dialogues in edge_repair/data/dialogues.json.

Reports, per watchdog mode (the hidden-state probe, the default; rules and model combined; rules alone;
model alone): request detected %, false-positive % (and false positives from pasted/quoted/model
text), pair extraction %; for the default watchdog: valid plan %, request satisfied % (verified
forgetting), refusal (IDK) % and seconds per stage.
Prints only numbers and dialogue ids, never dialogue text.

  nice -n 10 python scripts/bench_pipeline.py [--model DIR] [--edits 10] [--json] [--out results]

With --out, results/pipeline.json and results/pipeline.md (the README's table) are written.
"""

import argparse
import json
import statistics
import time
from importlib import resources
from pathlib import Path

import edge_repair  # noqa: F401 - loads OpenBLAS before mlx
from edge_repair.loading import load_patient
from edge_repair.pipeline.plan import to_request
from edge_repair.pipeline.surgeon import Surgeon, SurgeonConfig
from edge_repair.pipeline.watchdog import MODES, Watchdog, WatchdogConfig
from edge_repair.progress import status

PASTED = {"quoted", "pasted", "quote-line", "code", "model-output"}
DEFAULT = WatchdogConfig().mode


def pct(hits: int, total: int):
    return round(100.0 * hits / total, 1) if total else None


def load_dialogues() -> list[dict]:
    return json.loads(resources.files("edge_repair").joinpath("data", "dialogues.json").read_text())


def watchdog_scores(patient, dialogues: list[dict], mode: str) -> tuple[dict, list]:
    dog = Watchdog(patient, WatchdogConfig(mode=mode))
    rows = []
    for d in dialogues:
        start = time.perf_counter()
        detection = dog.inspect(d["message"], d["history"])
        rows.append((d, detection, time.perf_counter() - start))
    return summarise(rows), rows


def summarise(rows: list) -> dict:
    requests = [(d, x) for d, x, _ in rows if d["expect"] == "unlearn"]
    chats = [(d, x) for d, x, _ in rows if d["expect"] == "chat"]
    pasted = [(d, x) for d, x in chats if d.get("trap") in PASTED]
    with_prompt = [(d, x) for d, x in requests if d.get("prompt")]
    return {
        "detected_pct": pct(sum(x.unlearn for _, x in requests), len(requests)),
        "false_positive_pct": pct(sum(x.unlearn for _, x in chats), len(chats)),
        "false_positives_from_pasted": sum(x.unlearn for _, x in pasted),
        "pair_extracted_pct": pct(sum(bool(x.pair and x.pair.prompt == d["prompt"]) for d, x in with_prompt), len(with_prompt)),
        "missed": [d["id"] for d, x in requests if not x.unlearn],
        "false_positive_ids": [d["id"] for d, x in chats if x.unlearn],
        "watchdog_seconds_mean": round(statistics.mean(s for *_, s in rows), 3),
        "n_requests": len(requests), "n_chat": len(chats),
    }


def repair_scores(patient, rows: list, max_edits: int, model_paraphrases: int) -> dict:
    from edge_repair.engine.forget import prepare
    from edge_repair.engine.lowrank import current_factors, set_factors
    from edge_repair.pipeline.pipeline import PreparedEngine
    from edge_repair.pipeline.retain import retain_prompts

    surgeon = Surgeon(patient, SurgeonConfig(model_paraphrases=model_paraphrases))
    pairs = [x.pair for d, x, _ in rows if d["expect"] == "unlearn" and x.unlearn and x.pair]
    plans, surgeon_s, engine_s, verified, idk, probes, engine_note = [], [], [], 0, 0, 0, None
    model_kept, declined, tries, finished, histories = 0, [], [], 0, []
    for pair in pairs:
        plan, report = surgeon.plan(pair, len(patient.model.layers))
        plans.append(report.valid)
        surgeon_s.append(report.seconds)
        model_kept += report.model_paraphrases_kept
    status(f"surgeon: {len(pairs)} plans in {sum(surgeon_s):.0f} s")
    # As in chat: the retain activations are unsealed once per session, not per edit (the one-shot
    # CLI pays that once per call, ~2-3 s).
    retain = retain_prompts()
    engine = PreparedEngine(prepare(patient, retain), retain)
    for pair in pairs[:max_edits]:
        plan, _ = surgeon.plan(pair, len(patient.model.layers))
        before = current_factors(patient.model)
        start = time.perf_counter()
        try:
            result = engine(patient, to_request(plan, pair), retain)
        except NotImplementedError as err:
            engine_note = f"engine not available: {err}"
            break
        engine_s.append(time.perf_counter() - start)
        tries.append(result.tries)
        histories.append(result.edit.info["history"])  # per try: strength, rank and check counts
        finished += bool(result.edit.info.get("follow_through"))
        verified += result.verification.verified
        if not result.verification.verified:
            declined.append(result.verification.reason)  # counts only, never the forgotten text
        idk += result.verification.refused
        probes += result.verification.forget_probes
        set_factors(patient.model, before)  # each dialogue starts from the unedited patient
    return {
        "valid_plan_pct": pct(sum(plans), len(plans)), "plans": len(plans),
        "model_paraphrases_kept_pct": pct(model_kept, len(pairs) * model_paraphrases),
        "surgeon_seconds_mean": round(statistics.mean(surgeon_s), 3) if surgeon_s else None,
        "edits_run": len(engine_s), "satisfied_pct": pct(verified, len(engine_s)),
        "idk_pct": pct(idk, probes), "engine_seconds_mean": round(statistics.mean(engine_s), 3) if engine_s else None,
        "engine_seconds": [round(s, 2) for s in engine_s], "tries": tries, "follow_through_added": finished,
        "engine_note": engine_note, "declined_reasons": declined, "histories": histories,
    }


def splits(dialogues: list[dict]) -> dict[str, list[dict]]:
    """The main set (the rules were written against it) and each held-out batch, by id prefix
    ("heldout3-…"): each batch was written before some change to the rules, so each is reported apart."""
    out = {"main": [d for d in dialogues if not d["category"].startswith("heldout")]}
    for d in dialogues:
        if d["category"].startswith("heldout"):
            out.setdefault(d["id"].split("-")[0], []).append(d)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="patient model (default: the embedded one)")
    parser.add_argument("--edits", type=int, default=10, help="how many detected requests to run through the engine")
    parser.add_argument("--model-paraphrases", type=int, default=SurgeonConfig().model_paraphrases)
    parser.add_argument("--modes", default=",".join(MODES), help=f"watchdog modes to measure ({DEFAULT} is needed)")
    parser.add_argument("--json", action="store_true")
    parser.add_argument("--out", default=None, help="directory for pipeline.json + pipeline.md")
    args = parser.parse_args()
    if DEFAULT not in args.modes.split(","):
        parser.error(f"--modes must include {DEFAULT} (its detections go through the engine)")
    patient = load_patient(args.model)
    dialogues = load_dialogues()
    report = {}
    for split, subset in splits(dialogues).items():
        for mode in args.modes.split(","):
            start = time.perf_counter()
            report[f"{split}/{mode}"], rows = watchdog_scores(patient, subset, mode)
            status(f"watchdog {split}/{mode}: {len(subset)} dialogues in {time.perf_counter() - start:.0f} s")
            if split == "main" and mode == DEFAULT:
                default_rows = rows
    report["repair"] = repair_scores(patient, default_rows, args.edits, args.model_paraphrases)
    repair, dog = report["repair"], report[f"main/{DEFAULT}"]
    stages = [dog["watchdog_seconds_mean"], repair["surgeon_seconds_mean"], repair["engine_seconds_mean"]]
    report["turnaround_seconds_mean"] = round(sum(s for s in stages if s), 3) if repair["engine_seconds_mean"] else None
    print(json.dumps(report, indent=None if args.json else 1))
    if args.out:
        write_results(Path(args.out), report)


def write_results(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "pipeline.json").write_text(json.dumps(report, indent=1) + "\n")
    cell = lambda v, unit="": "–" if v is None else f"{v}{unit}"
    lines = ["| watchdog | dialogues (requests / chat) | detected | false positives | from pasted/quoted | pair extracted |",
             "|---|---|---|---|---|---|"]
    for name, row in report.items():
        if "/" in name:
            lines.append(f"| {name} | {row['n_requests']} / {row['n_chat']} | {cell(row['detected_pct'], '%')} | "
                         f"{cell(row['false_positive_pct'], '%')} | {row['false_positives_from_pasted']} | "
                         f"{cell(row['pair_extracted_pct'], '%')} |")
    r = report["repair"]
    lines += ["", "| valid plan | request satisfied (verified) | refusal (IDK) on probes | watchdog s | surgeon s | "
              "engine s | turnaround s |", "|---|---|---|---|---|---|---|",
              f"| {cell(r['valid_plan_pct'], '%')} ({r['plans']} plans) | {cell(r['satisfied_pct'], '%')} "
              f"({r['edits_run']} edits) | {cell(r['idk_pct'], '%')} | {report[f'main/{DEFAULT}']['watchdog_seconds_mean']} | "
              f"{r['surgeon_seconds_mean']} | {r['engine_seconds_mean']} | {cell(report['turnaround_seconds_mean'])} |"]
    (out / "pipeline.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()

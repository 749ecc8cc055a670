"""The direct path's reach: does forgetting one question carry to other ways of asking it?

As `edge-repair forget --prompt Q` does it: the edit sees only the question and the surgeon's
plan (its templates and question rewrites), never a written paraphrase. Measured per fact on the
written phrasings of facts.json (3 paraphrases + the held-out one; the rewrites share their
shapes) and on 3 phrasings written apart by an agent that saw neither the rewrites nor the
engine ("unseen_paraphrases"), plus the other facts' answers.

    python scripts/bench_direct.py --trials 10 [--no-rewrites] [--out results]
"""

import argparse
import json
import sys
from pathlib import Path

import edge_repair  # noqa: F401  (fast BLAS before mlx)
from edge_repair import datasets
from edge_repair.bench.baselines import evenly
from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget, prepare
from edge_repair.engine.lowrank import set_factors
from edge_repair.engine.verify import greedy_replies, mentions
from edge_repair.loading import load_patient
from edge_repair.pipeline import paraphrase
from edge_repair.pipeline.extract import ForgetPair, subject_of
from edge_repair.pipeline.surgeon import Surgeon

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_forget import answers, facts_kept  # noqa: E402 - the same fact helpers


def trial(patient, fact, others, retain, config, bank) -> dict:
    subject = subject_of(fact["question"])
    plan, _ = Surgeon(patient).plan(ForgetPair(fact["question"], None, subject, "direct"), len(patient.layers))
    result = forget(patient, ForgetRequest(fact["question"], paraphrases=plan.paraphrases, subject=subject),
                    retain, config, bank)
    written = fact["paraphrases"] + [fact["heldout_paraphrase"]]
    replies = greedy_replies(patient, [fact["question"], *written, *fact["unseen_paraphrases"]], 24)
    gone = [not mentions(r, answers(fact)) for r in replies]
    row = {"fact": fact["id"], "verified": result.verification.verified, "plan_phrasings": len(plan.paraphrases),
           "seconds": round(result.seconds, 1), "question_gone": gone[0], "written_gone": sum(gone[1:5]),
           "unseen_gone": sum(gone[5:]), "others_kept": sum(facts_kept(patient, others)), "others": len(others)}
    set_factors(patient.model, {})
    return row


def summarise(rows: list[dict], rewrites: bool) -> dict:
    verified = [r for r in rows if r["verified"]]
    share = lambda key, n: round(100 * sum(r[key] for r in verified) / max(n * len(verified), 1), 1)
    return {"rewrites": rewrites, "trials": len(rows), "verified": len(verified),
            "written_gone_pct": share("written_gone", 4), "unseen_gone_pct": share("unseen_gone", 3),
            "others_kept_pct": round(100 * sum(r["others_kept"] for r in rows) / sum(r["others"] for r in rows), 1),
            "median_seconds": sorted(r["seconds"] for r in rows)[len(rows) // 2]}


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--no-rewrites", action="store_true", help="the surgeon's question rewrites off (for comparison)")
    parser.add_argument("--out", default=None, help="directory for direct.json + direct.md")
    args = parser.parse_args()
    if args.no_rewrites:
        paraphrase.question_rewrites = lambda question: []
    patient = load_patient(args.model)
    facts = datasets.facts()
    facts = [f for f, known in zip(facts, facts_kept(patient, facts)) if known]
    retain, config = datasets.retain_prompts(), EngineConfig()
    bank = prepare(patient, retain, config)
    rows = []
    for fact in evenly(facts, args.trials):
        rows.append(trial(patient, fact, [f for f in facts if f["id"] != fact["id"]], retain, config, bank))
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    summary = summarise(rows, not args.no_rewrites)
    print(json.dumps(summary))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "direct.json").write_text(json.dumps({"summary": summary, "rows": rows}, indent=1) + "\n")
        (out / "direct.md").write_text(
            "| edit sees | trials | verified | written phrasings gone | unseen phrasings gone | other facts kept | edit s (median) |\n"
            "|---|---|---|---|---|---|---|\n"
            f"| the question + the surgeon's plan ({'with' if summary['rewrites'] else 'without'} question rewrites) | "
            f"{summary['trials']} | {summary['verified']} | {summary['written_gone_pct']}% | {summary['unseen_gone_pct']}% | "
            f"{summary['others_kept_pct']}% | {summary['median_seconds']} |\n")


if __name__ == "__main__":
    main()

"""Forgetting benchmark on the embedded default model (issue 3 targets).

One fact forgotten per trial from facts.json (question + 3 paraphrases used for the edit, a
held-out paraphrase only for evaluation); afterwards: is the answer gone, do the other facts
keep theirs, are ordinary chat replies unchanged, perplexity on held-out text, refusal rate,
edit seconds. --sequential N forgets N facts one after another without undoing.

    python scripts/bench_forget.py --trials 10 --methods stamp-gated,stamp-lr,stamp
"""

import argparse
import json
import statistics
import sys
import time

import edge_repair  # noqa: F401  (fast BLAS before mlx)
from edge_repair import datasets
from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget
from edge_repair.engine.lowrank import set_factors
from edge_repair.engine.quality import perplexity
from edge_repair.engine.verify import greedy_replies, is_refusal, mentions, reply_tokens, unchanged
from edge_repair.loading import load_patient


def answers(fact):
    return [fact["answer"], *fact.get("aliases", [])]


def facts_kept(patient, facts):
    replies = greedy_replies(patient, [f["question"] for f in facts], 16)
    return [mentions(r, answers(f)) for r, f in zip(replies, facts)]


def trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, strength):
    request = ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"], subject=fact["subject"],
                            method=method, strength=strength)
    result = forget(patient, request, retain, config)
    probes = [fact["question"], *fact["paraphrases"], fact["heldout_paraphrase"]]
    replies = greedy_replies(patient, probes, 24)
    row = {
        "fact": fact["id"], "method": method, "seconds": round(result.seconds, 2), "tries": result.tries,
        "verified": result.verification.verified, "history": result.edit.info["history"],
        "forgot_edit_probes": sum(not mentions(r, answers(fact)) for r in replies[:4]),
        "forgot_heldout": int(not mentions(replies[4], answers(fact))),
        "refused": is_refusal(replies[0]),
        "others_kept": sum(facts_kept(patient, others)), "others": len(others),
        "chat_same": sum(unchanged(patient, chat, chat_base)), "chat": len(chat),
        "ppl": round(perplexity(patient, ppl_text), 3),
        "reply": replies[0][:80],
    }
    return row, result


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None)
    parser.add_argument("--trials", type=int, default=10)
    parser.add_argument("--methods", default="stamp-gated")
    parser.add_argument("--strength", type=float, default=1.0)
    parser.add_argument("--sequential", type=int, default=0)
    parser.add_argument("--json", dest="json_out", default=None, help="write rows to this file")
    args = parser.parse_args()

    patient = load_patient(args.model)
    facts = datasets.facts()
    chat = datasets.chat_probes()[:20]
    retain = datasets.retain_prompts()
    config = EngineConfig()
    ppl_text = datasets.heldout_text()
    chat_base = [reply_tokens(patient.tokenizer, r) for r in greedy_replies(patient, chat, 16)]
    base_ppl = perplexity(patient, ppl_text)
    base_kept = facts_kept(patient, facts)
    print(f"base: facts answered {sum(base_kept)}/{len(facts)}  perplexity {base_ppl:.3f}", file=sys.stderr)
    rows = []
    for method in args.methods.split(","):
        for fact in facts[: args.trials]:
            others = [f for f in facts if f["id"] != fact["id"]]
            row, _ = trial(patient, fact, others, chat, chat_base, ppl_text, method, retain, config, args.strength)
            set_factors(patient.model, {})
            rows.append(row)
            print(json.dumps(row), file=sys.stderr, flush=True)
        summarise([r for r in rows if r["method"] == method], base_ppl)
    if args.sequential:
        sequential(patient, facts, args.sequential, retain, config)
    if args.json_out:
        with open(args.json_out, "w") as f:
            json.dump({"base_ppl": base_ppl, "rows": rows}, f, indent=1)


def summarise(rows, base_ppl):
    n = len(rows)
    forgot = sum(r["forgot_edit_probes"] == 4 for r in rows)
    print(f"\n{rows[0]['method']}: {n} trials")
    print(f"  answer gone on all 4 edit phrasings: {forgot}/{n}; held-out phrasing: {sum(r['forgot_heldout'] for r in rows)}/{n}")
    print(f"  other facts kept: {100 * sum(r['others_kept'] for r in rows) / sum(r['others'] for r in rows):.1f}%"
          f"  chat unchanged: {100 * sum(r['chat_same'] for r in rows) / sum(r['chat'] for r in rows):.1f}%")
    print(f"  perplexity: base {base_ppl:.3f}, mean after {statistics.mean(r['ppl'] for r in rows):.3f}"
          f" ({100 * (statistics.mean(r['ppl'] for r in rows) / base_ppl - 1):+.2f}%)")
    print(f"  refusals: {sum(r['refused'] for r in rows)}/{n}; verified: {sum(r['verified'] for r in rows)}/{n}")
    print(f"  edit seconds: median {statistics.median(r['seconds'] for r in rows):.2f}")


def sequential(patient, facts, count, retain, config):
    forgotten = facts[:count]
    start = time.perf_counter()
    for fact in forgotten:
        forget(patient, ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"], subject=fact["subject"]),
               retain, config)
    rest = facts[count:]
    kept = facts_kept(patient, rest)
    still = [not any(mentions(r, answers(f)) for r in greedy_replies(patient, [f["question"]], 16)) for f in forgotten]
    print(f"\nsequential {count} forgets ({time.perf_counter() - start:.0f}s): still forgotten {sum(still)}/{count};"
          f" other facts kept {sum(kept)}/{len(rest)} ({100 * sum(kept) / max(len(rest), 1):.1f}%)")


if __name__ == "__main__":
    main()

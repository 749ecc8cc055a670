"""Keep the candidate facts the base model answers correctly on all five phrasings; write facts.json.

    nice -n 10 python scripts/build_facts.py            # candidates from scripts/fact_candidates.json

A phrasing passes when the answer or an alias appears as a word in the greedy reply (max 24 tokens).
Generation stops as soon as the answer appears, and a candidate stops at its first failing phrasing.
"""

import argparse
import json
import re
import sys
import time
from pathlib import Path

import edge_repair  # noqa: F401 - loads the fast BLAS before mlx
from edge_repair.datasets import mentions
from edge_repair.generation import stream_reply
from edge_repair.loading import load_patient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "/tmp/er-models/SmolLM2-135M-Instruct-Q4_1"


def replies_with(patient, prompt: str, names: list[str], max_tokens: int) -> tuple[bool, str]:
    """Greedy reply to prompt, stopped early once a name appears; (found, text so far)."""
    text = ""
    for piece in stream_reply(patient, [{"role": "user", "content": prompt}], max_tokens=max_tokens):
        text += piece
        if mentions(text, names):
            return True, text.strip()
    return False, text.strip()


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower().removeprefix("the ")).strip("-")


def expand(groups: list[dict]) -> list[dict]:
    """Candidate facts from template groups: each item is [subject, answer, optional extra aliases]."""
    out = []
    for g in groups:
        for subject, answer, *extra in g["items"]:
            fill = lambda t: t.replace("{s}", subject)  # noqa: E731
            fact = {
                "id": f"{g['category']}-{slug(subject)}",
                "subject": subject.removeprefix("the "),
                "question": fill(g["question"]),
                "paraphrases": [fill(p) for p in g["paraphrases"]],
                "answer": answer,
                "aliases": [answer, *(extra[0] if extra else [])],
                "heldout_paraphrase": fill(g["heldout"]),
            }
            fact["question"] = fact["question"][0].upper() + fact["question"][1:]
            fact["paraphrases"] = [p[0].upper() + p[1:] for p in fact["paraphrases"]]
            out.append(fact)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--candidates", type=Path, default=ROOT / "scripts" / "fact_candidates.json")
    ap.add_argument("--out", type=Path, default=ROOT / "edge_repair" / "data" / "facts.json")
    ap.add_argument("--max-tokens", type=int, default=24)
    args = ap.parse_args()

    candidates = expand(json.loads(args.candidates.read_text()))
    ids = [c["id"] for c in candidates]
    assert len(ids) == len(set(ids)), "duplicate candidate ids"
    patient = load_patient(args.model)
    kept, failed_at = [], {}
    t0 = time.time()
    for i, fact in enumerate(candidates, 1):
        phrasings = [fact["question"], *fact["paraphrases"], fact["heldout_paraphrase"]]
        if any(mentions(p, fact["aliases"]) for p in phrasings):
            print(f"[{i}/{len(candidates)}] SKIP {fact['id']}: the answer is in a phrasing", file=sys.stderr)
            continue
        for k, prompt in enumerate(phrasings):
            ok, text = replies_with(patient, prompt, fact["aliases"], args.max_tokens)
            if not ok:
                failed_at[k] = failed_at.get(k, 0) + 1
                print(f"[{i}/{len(candidates)}] FAIL {fact['id']} on {prompt!r}: {text!r}", file=sys.stderr)
                break
        else:
            kept.append(fact)
            print(f"[{i}/{len(candidates)}] pass {fact['id']}", file=sys.stderr)
    args.out.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    names = ["question", "paraphrase 1", "paraphrase 2", "paraphrase 3", "held-out"]
    print(f"tested {len(candidates)} candidates in {time.time() - t0:.0f}s; {len(kept)} pass all 5 phrasings")
    print("first failure at: " + ", ".join(f"{names[k]} {n}" for k, n in sorted(failed_at.items())))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

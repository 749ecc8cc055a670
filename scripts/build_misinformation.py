"""Keep questions the base model answers wrongly and consistently; write misinformation.json.

    nice -n 10 python scripts/build_misinformation.py --discover   # print the greedy replies to every phrasing
    nice -n 10 python scripts/build_misinformation.py              # verify CANDIDATES and write the file

A candidate passes when `wrong_answer` appears (as a word) in the greedy reply (max 24 tokens) to the
question and to at least 2 paraphrases, and `correct_answer` appears in none of those replies.
"""

import argparse
import json
import sys
import time
from pathlib import Path

import edge_repair  # noqa: F401 - loads the fast BLAS before mlx
from edge_repair.datasets import mentions
from edge_repair.generation import ask
from edge_repair.loading import load_patient

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_MODEL = "/tmp/er-models/SmolLM2-135M-Instruct-Q4_1"


def capital(place: str, correct: str, wrong: str | None) -> tuple:
    pid = "capital-" + place.lower().removeprefix("the ").replace(" ", "-")
    return (pid, f"What is the capital of {place}?",
            [f"Which city is the capital of {place}?", f"{place[0].upper() + place[1:]}'s capital city is called what?",
             f"Tell me the capital of {place}."],
            correct, wrong)


# (id, question, paraphrases, correct_answer, wrong_answer seen in --discover output; None = not yet known).
# Dropped after --discover because the model was right or inconsistent: capitals of Australia, Canada, Brazil,
# Switzerland, New Zealand, Nigeria, Morocco, Pakistan, Vietnam, Kazakhstan, Tanzania, Scotland, Texas, Washington
# State, Ecuador, Ivory Coast and India; hottest/smallest/farthest planet, moons of Mars, octopus hearts, adult bones,
# spider legs, symbols of potassium, lead and mercury, authors of Frankenstein, The Divine Comedy and 1984, painter of
# Guernica, inventor of the telephone, longest river in South America, smallest country, currency of Switzerland,
# language of Brazil, freezing point in Fahrenheit, first Moon landing year, author of Pride and Prejudice, largest
# US state, country of Kilimanjaro, language of Iran, first Roman emperor, largest lake and highest mountain in Africa,
# language of Argentina.
CANDIDATES = [
    capital("Turkey", "Ankara", "Istanbul"),
    capital("Myanmar", "Naypyidaw", "Yangon"),
    ("largest-moon", "What is the largest moon in the solar system?",
     ["Which moon is the biggest in our solar system?", "The largest moon orbiting any planet is which one?", "Name the biggest moon in the solar system."], "Ganymede", "Titan"),
    ("largest-continent", "What is the largest continent?",
     ["Which continent is the biggest on Earth?", "The world's largest continent is which one?", "Name the largest continent by area."], "Asia", "Antarctica"),
    capital("Belize", "Belmopan", "Belize City"),
    capital("the United States", "Washington", "New York"),
    capital("California", "Sacramento", "Los Angeles"),
    capital("Florida", "Tallahassee", "Miami"),
    capital("Illinois", "Springfield", "Chicago"),
    capital("New York State", "Albany", "New York City"),
    ("currency-denmark", "What is the currency of Denmark?",
     ["Which currency is used in Denmark?", "What money do people use in Denmark?", "Tell me the official currency of Denmark."], "krone", "euro"),
    # wrong answers guessed without --discover (the common mistake); verification decides
    capital("Nevada", "Carson City", "Las Vegas"),
    capital("Pennsylvania", "Harrisburg", "Philadelphia"),
    capital("Michigan", "Lansing", "Detroit"),
    capital("Louisiana", "Baton Rouge", "New Orleans"),
    capital("Oregon", "Salem", "Portland"),
    capital("Kentucky", "Frankfort", "Louisville"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    ap.add_argument("--out", type=Path, default=ROOT / "edge_repair" / "data" / "misinformation.json")
    ap.add_argument("--max-tokens", type=int, default=24)
    ap.add_argument("--discover", action="store_true", help="print replies for candidates without a wrong_answer")
    args = ap.parse_args()

    patient = load_patient(args.model)
    t0 = time.time()
    if args.discover:
        for cid, question, paraphrases, correct, wrong in CANDIDATES:
            if wrong is None:
                for prompt in [question, *paraphrases]:
                    print(f"{cid}\t{prompt}\t{ask(patient, prompt, args.max_tokens)!r}", flush=True)
        print(f"discovery took {time.time() - t0:.0f}s", file=sys.stderr)
        return

    kept, tested = [], 0
    for cid, question, paraphrases, correct, wrong in CANDIDATES:
        if wrong is None:
            continue
        tested += 1
        replies = [ask(patient, p, args.max_tokens) for p in [question, *paraphrases]]
        hits = [mentions(r, [wrong]) and not mentions(r, [correct]) for r in replies]
        ok = hits[0] and sum(hits[1:]) >= 2
        print(f"{'pass' if ok else 'FAIL'} {cid}: wrong '{wrong}' in {sum(hits)}/{len(hits)} replies", file=sys.stderr)
        if ok:
            kept.append({"id": cid, "question": question,
                         "paraphrases": [p for p, hit in zip(paraphrases, hits[1:]) if hit],
                         "wrong_answer": wrong, "correct_answer": correct})
    args.out.write_text(json.dumps(kept, indent=1, ensure_ascii=False) + "\n")
    print(f"tested {tested} candidates in {time.time() - t0:.0f}s; {len(kept)} answered wrongly and consistently")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

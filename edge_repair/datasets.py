"""The packaged data sets: facts to forget, misinformation, refusals (D_ref), retain prompts (D_r),
chat probes, general text and held-out text. Each call reads the file afresh; nothing is cached here."""

import json
import re
from importlib import resources


def _read(name: str) -> str:
    return resources.files("edge_repair").joinpath("data", name).read_text(encoding="utf-8")


def _json(name: str):
    return json.loads(_read(name))


def facts() -> list[dict]:
    """Facts the base model answers correctly on the question, 3 paraphrases and a held-out phrasing."""
    return _json("facts.json")


def misinformation() -> list[dict]:
    """Questions the base model answers wrongly and consistently, with the wrong and correct answers."""
    return _json("misinformation.json")


def refusals() -> list[str]:
    """D_ref: generic natural refusal texts."""
    return _json("refusals.json")


def retain_prompts() -> list[str]:
    """D_r: generic user prompts unrelated to any fact in facts()."""
    return _json("retain_prompts.json")


def general_questions() -> list[str]:
    """Short general-knowledge questions the model should keep answering; none is about a subject
    of facts() or misinformation(), so the benchmarks' "other facts" stay out of sample."""
    return _json("general_questions.json")


def requests() -> list[dict]:
    """Labelled messages ({"text", "label": "unlearn"|"chat"}) the watchdog's request probe is fitted
    on; written apart from the benchmark's dialogues, which stay out of sample."""
    return _json("requests.json")


def chat_probes() -> list[str]:
    """Ordinary chat prompts whose replies should stay essentially unchanged after an edit."""
    return _json("chat_probes.json")


def general_text() -> list[str]:
    """Original everyday prose (notes, how-tos, mail, reviews), one paragraph per item: raw text the
    engine keeps its units silent on and guards perplexity with. Kept apart from heldout_text(),
    which only the benchmarks read."""
    return [p.strip() for p in _read("general_text.txt").split("\n\n") if p.strip()]


def entity_kinds() -> dict[str, list[str]]:
    """Named things by kind (countries, elements, symbols, works, people, superlatives, …) that stand
    in for a forget subject; none is a subject of facts() (see engine/substitutes.py)."""
    return _json("entities.json")


def entities() -> list[str]:
    return [name for names in entity_kinds().values() for name in names]


def heldout_text() -> str:
    """Original plain English prose for perplexity."""
    return _read("heldout.txt")


def mentions(text: str, names: list[str]) -> bool:
    """True if any name occurs in text as a whole word (case-insensitive; a plural 's'/'es' is allowed)."""
    return any(re.search(rf"(?<!\w){re.escape(n)}(?:s|es)?(?!\w)", text, re.IGNORECASE) for n in names)

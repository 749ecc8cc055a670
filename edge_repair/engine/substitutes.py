"""Near-miss subjects chosen by the model itself: the shipped entities it represents most like the
forget subject.

Swapping a forget prompt's subject for another entity gives the gate its hardest negatives and the
verification its neighbours, but only when the entity is of the same kind ("Which element has the
symbol Cu?" → "… the symbol Ni?", not "… the symbol Spain?"). Measured on 20 sequential forgets with
one fixed list of (mostly) countries: forgetting Cu also refused Fe and Zn, and the neighbour checks,
all countries, never noticed. The model's residual at the end of "Tell me about {name}." a fifth of
the way up puts mostly same-kind entities first for elements, symbols, countries, US states, works,
people, superlatives, quantities and formulas (looked at by eye over the facts' and misinformation
subjects, not counted); it misses for "United Kingdom"/"United States" (→ superlatives), "Statue of
Liberty" (→ works), "pyramids of Giza", and phrases whose swapped name is a part ("king of the
Greek gods" → "Greek", "longest river in Africa" → "Africa").
"""

import numpy as np

from edge_repair.engine.capture import capture

CARRIER = "Tell me about {}."


def layer_for(num_layers: int) -> int:
    """The layer whose residual is compared (6 of SmolLM2's 30: early enough to be about the name)."""
    return num_layers // 5


def representations(model, tokenizer, names: list[str], layer: int) -> np.ndarray:
    """(n, d) float32: the residual after `layer` at the last token of each name in the carrier."""
    lists = [tokenizer.encode(CARRIER.format(name), add_special_tokens=False) for name in names]
    acts = capture(model, lists, [layer], batch_size=32, kinds=("resid",), positions=[-1])
    return np.array(acts.resid[layer], np.float32)


def ranked(subject: str, subject_vector: np.ndarray, names: list[str], vectors: np.ndarray) -> list[str]:
    """`names` most like the subject first (cosine around the names' mean; the subject itself left out)."""
    centre = vectors.mean(axis=0)
    rows = _unit(vectors - centre)
    scores = rows @ _unit(subject_vector - centre)
    return [names[i] for i in np.argsort(-scores, kind="stable") if names[i].lower() != subject.lower()]


def split(ranked_names: list[str], near: int, checks: int) -> tuple[list[str], list[str]]:
    """(near-miss substitutes, held-out check substitutes) from the closest near + checks names:
    every fourth goes to the checks, so both are equally close to the subject and never overlap."""
    top = ranked_names[: near + checks]
    held = set(top[3::4][:checks])
    return [n for n in top if n not in held], [n for n in top if n in held]


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)

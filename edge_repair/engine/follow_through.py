"""The follow-through: one gated unit per layer, shared by every edit, that finishes a refusal.

An edit's answer units turn the first reply token into "I"; left alone the model then drifts back
to the answer ("I'm glad you asked. The capital is…"). This unit fires on the tokens of a refusal
that follows a question and moves them, token by token, to where a refusal context puts them, so
the reply ends as a refusal. It knows nothing about any forgotten fact: it is built once per base
model from shipped general questions, kept in the sealed negative bank, and active while at least
one edit is. One shared unit rather than one per edit: measured on 20 stacked edits, per-edit
copies all fired on every refusal (replies collapsed to one repeated word) and the 40 neurons per
layer they overwrote cost +5.9 % perplexity on their own (answer units alone: +1.8 %).

Since session 14 an edit brings it only when needed (forget.FOLLOW_THROUGH): a whole-subject
forget from its first try, any other edit on the next try once a try removed the answer but too
few replies were refusals. Always on, it was what changed ordinary chat: it fires on any reply's
"I'm" after a question ("I'm glad…" → "I'm sorry…") and on sentence ends (a greeting cut after
"Hello!"); alone it changed 5 of 20 chat replies, three edits' answer units none. The facts
benchmark never needs it now (chat unchanged 98.0 % against 76.5 %); requests
about whole (made-up) people do ("Tell me about Maya Taylor." → "I'm Maya Taylor, a talented
artist…" without it: 3 of 10 pipeline requests declined).
"""

import mlx.core as mx

from edge_repair import datasets
from edge_repair.engine import gated, units
from edge_repair.engine.lowrank import neuron_weights, rewritten_neurons
from edge_repair.engine.probes import REFUSAL
from edge_repair.engine.verify import reply_tokens

QUESTIONS = 16  # general questions whose refusals are the unit's positives
RIDGE = 0.1


def build(patient, bank, layers: list[int]) -> dict[int, tuple[gated.Unit, int]]:
    """layer -> (unit, neuron) for the base model (the caller has removed any edits)."""
    tok = patient.tokenizer
    every = datasets.general_questions()
    questions = every[:: max(1, len(every) // QUESTIONS)][:QUESTIONS]  # spread over the kinds of question
    captured = units.refusal_captures(patient.model, tok, questions, layers, reply_tokens(tok, REFUSAL))
    found = units.layer_units(*captured, layers, bank, {l: set() for l in layers}, ridge=RIDGE)
    return {layer: (unit, neuron) for layer, unit, neuron in found}


def neurons(bank, layer: int) -> set[int]:
    """The neuron the follow-through occupies at `layer` (edits must not take it)."""
    return {bank.follow_through[layer][1]} if layer in bank.follow_through else set()


def missing_factors(model, bank, layers: list[int]) -> dict:
    """Factors of the follow-through units at `layers` that the model does not compute yet.

    The follow-through's neuron is never given to an edit, so it is rewritten exactly when the
    follow-through is active."""
    parts, rewritten = {}, rewritten_neurons(model)
    for layer in layers:
        if layer not in bank.follow_through:
            continue
        unit, neuron = bank.follow_through[layer]
        if neuron in rewritten.get(layer, ()):
            continue
        for name, (a, b) in gated.neuron_factors(unit, neuron, neuron_weights(model, layer, neuron)).items():
            parts[f"model.layers.{layer}.mlp.{name}"] = (mx.array(a), mx.array(b))
    return parts

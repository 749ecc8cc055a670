"""Entry point of the forgetting engine: one forget pair in, a verified low-rank edit out.

Default method "stamp-gated" (see gated.py): one gated unit per layer of a band near the top
of the network, keyed on the forget prompt's last position (where the answer's first token is
decided), valued by the residual shift of a refusal context. "stamp" and "stamp-lr" are the
paper's literal recipe (steering vector r_SV, Eq. 4, added to the MLP output at one layer,
solved by Eq. 8–9 or 10–11) kept for comparison in the benchmarks.
"""

import time
from dataclasses import dataclass, field

import mlx.core as mx
import numpy as np

from edge_repair.engine import gated, literal
from edge_repair.engine.capture import capture
from edge_repair.engine.lowrank import LowRankEdit, current_factors, mlp_weights, set_factors, stack
from edge_repair.engine.negatives import NegativeBank, load_or_build
from edge_repair.engine.probes import answer_terms, near_miss_prompts, probe_prompts, refusal_context
from edge_repair.engine.verify import chat_tokens, greedy_replies, is_refusal, mentions, reply_tokens, unchanged
from edge_repair.errors import InputError

METHODS = ("stamp-gated", "stamp", "stamp-lr")
# Open-ended replies flip on near-ties at the slightest change (rewriting 10 unused neurons
# alone flips ~1 in 16), so retain checks compare the first CHECK_TOKENS tokens and allow slack.
RETAIN_BAR = 0.75
CHECK_TOKENS = 8


@dataclass
class ForgetRequest:
    prompt: str                      # p_f, e.g. "What is the capital of France?"
    response: str | None = None      # r_f; None means the patient's own greedy answer
    paraphrases: list[str] = field(default_factory=list)  # other phrasings (surgeon/watchdog)
    subject: str | None = None       # e.g. "France", "Maya Taylor" (used for probes, never stored)
    method: str = "stamp-gated"      # one of METHODS
    layers: str | list[int] = "auto"
    rank: int | None = None          # units per layer (gated) or solve rank (stamp-lr)
    strength: float = 1.0


@dataclass
class Verification:
    forgotten: int          # probes (prompt + paraphrases) whose answer no longer gives r_f
    forget_probes: int
    retained: int           # retain probes whose greedy answer is unchanged
    retain_probes: int
    refused: int            # probes answered with a short refusal

    @property
    def verified(self) -> bool:
        return self.forgotten == self.forget_probes and self.retained >= RETAIN_BAR * self.retain_probes

    def as_dict(self) -> dict:
        return {**self.__dict__, "verified": self.verified}


@dataclass
class ForgetResult:
    edit: LowRankEdit
    verification: Verification
    seconds: float
    tries: int = 1
    replies: list[str] = field(default_factory=list)  # post-edit replies to the probes (in memory only)


@dataclass
class EngineConfig:
    retain_probes: int = 16     # retain prompts whose greedy answers must not change
    negatives: int = 128        # retain prompts whose every token is a gate negative
    max_tries: int = 3
    verify_tokens: int = 16


def band(num_layers: int, layers: str | list[int]) -> list[int]:
    """Layers to edit: explicit, or the top third of the network ("auto")."""
    if layers == "auto":
        return list(range(num_layers - max(4, num_layers // 3), num_layers))
    chosen = sorted({int(l) for l in layers})
    if not chosen or chosen[0] < 0 or chosen[-1] >= num_layers:
        raise InputError(f"layers must be between 0 and {num_layers - 1}")
    return chosen


def _taken_neurons(model, layer: int) -> set[int]:
    """Neurons already rewritten by earlier edits (their one-hot rows in gate_proj's b)."""
    factors = current_factors(model).get(f"model.layers.{layer}.mlp.gate_proj")
    if factors is None:
        return set()
    return {int(j) for j in np.flatnonzero(np.abs(np.array(factors[1])).sum(axis=0))}


def gated_edit(patient, prompts: list[str], subject: str | None, bank: NegativeBank, layers: list[int]):
    """One gated unit per layer (see gated.py); returns strength -> factors (the solve is done once)."""
    tok = patient.tokenizer
    near = near_miss_prompts(prompts, subject)
    context = refusal_context()
    token_lists = ([chat_tokens(tok, p) for p in prompts] + [chat_tokens(tok, p, context) for p in prompts]
                   + [chat_tokens(tok, p) for p in near])
    acts = capture(patient.model, token_lists, layers)
    n = len(prompts)
    last = lambda i: acts.rows(i, [-1])[0]
    pos_rows = [last(i) for i in range(n)]
    ref_rows = [last(n + i) for i in range(n)]
    near_rows = [last(2 * n + i) for i in range(len(near))]
    units, previous_shift = [], 0.0
    for layer in layers:
        X, R = np.array(acts.mlp_in[layer]), np.array(acts.resid[layer])
        negatives = np.concatenate([X[near_rows], bank.rows[layer]])
        shift = (R[ref_rows] - R[pos_rows]).mean(axis=0)
        # Key on both the plain and the refusal-context activations: once earlier layers have
        # moved the residual toward refusal, this layer must still recognise the question.
        unit = gated.gated_unit(X[pos_rows + ref_rows], negatives, shift - previous_shift)
        previous_shift = shift
        weights = mlp_weights(patient.model, layer)
        neuron = gated.least_used_neuron(bank.neuron_use[layer], _taken_neurons(patient.model, layer))
        units.append((layer, unit, neuron, weights))

    def factors(strength: float) -> dict:
        out = {}
        for layer, unit, neuron, weights in units:
            scaled = gated.Unit(unit.gate, unit.up, unit.down * strength, unit.margin)
            for name, (a, b) in gated.neuron_factors(scaled, neuron, *weights).items():
                out[f"model.layers.{layer}.mlp.{name}"] = (mx.array(a), mx.array(b))
        return out

    return factors


def forget(patient, request: ForgetRequest, retain_prompts: list[str], config: EngineConfig | None = None,
           bank: NegativeBank | None = None) -> ForgetResult:
    """Compute, apply (in memory) and verify an edit; the caller persists it.

    The first `config.negatives` retain prompts are the gate's negatives (`bank`: their cached
    activations, built when absent); the next ones check that other answers stay put. A
    failed verification leaves the model exactly as it was (result.verification says why).
    """
    config = config or EngineConfig()
    if request.method not in METHODS:
        raise InputError(f"unknown method '{request.method}'; choose from {', '.join(METHODS)}")
    start = time.perf_counter()
    prompts = probe_prompts(request.prompt, request.paraphrases)
    response = request.response or greedy_replies(patient, [request.prompt], config.verify_tokens)[0]
    terms = answer_terms(request.prompt, response)
    # Checked prompts are held out from the ones the solve sees as negatives.
    retain_checks = [p for p in retain_prompts[config.negatives:] if not _mentions_any(p, terms, request.subject)][: config.retain_probes]
    baseline = [reply_tokens(patient.tokenizer, r)[:CHECK_TOKENS] for r in greedy_replies(patient, retain_checks, CHECK_TOKENS)]
    layers = band(len(patient.layers), request.layers)
    before = current_factors(patient.model)
    strength, tries, best, history = request.strength, 0, None, []
    prepared = time.perf_counter()
    solved = _solver(patient, request, prompts, retain_prompts, layers, config, bank)
    solve_seconds = time.perf_counter() - prepared
    while tries < config.max_tries:
        tries += 1
        new = solved(strength)
        set_factors(patient.model, stack([before, new]))
        replies = greedy_replies(patient, prompts, config.verify_tokens)
        kept = unchanged(patient, retain_checks, baseline)
        check = Verification(sum(not mentions(r, terms) for r in replies), len(prompts), sum(kept), len(kept),
                             sum(is_refusal(r) for r in replies))
        best = (new, check, replies)
        history.append((round(strength, 3), check.forgotten, check.retained))
        if check.verified:
            break
        # Too weak: push harder; too broad: back off. Each try is one more closed-form solve.
        strength = strength * 1.5 if check.forgotten < check.forget_probes else strength * 0.7
    new, check, replies = best
    if not check.verified:
        set_factors(patient.model, before)
    info = {"method": request.method, "layers": layers, "rank": int(max(a.shape[1] for a, _ in new.values())),
            "strength": round(strength, 3), "tries": tries, "history": history,
            "solve_seconds": round(solve_seconds, 3), **{k: v for k, v in check.as_dict().items()}}
    return ForgetResult(LowRankEdit(new, info), check, time.perf_counter() - start, tries, replies)


def _solver(patient, request, prompts, retain_prompts, layers, config, bank):
    """strength -> factors for the requested method; the expensive capture happens once."""
    if request.method == "stamp-gated":
        negatives = retain_prompts[: config.negatives]
        if bank is None or any(l not in bank.rows for l in layers):
            bank = load_or_build(patient, negatives, layers)
        return gated_edit(patient, prompts, request.subject, bank, layers)
    layer = layers[len(layers) // 2] if request.layers == "auto" else layers[0]
    rank = (request.rank or 64) if request.method == "stamp-lr" else None
    return literal.stamp_edit(patient, prompts, retain_prompts[: config.negatives], layer, rank=rank)


def _mentions_any(text: str, terms: list[str], subject: str | None) -> bool:
    return mentions(text, terms + ([subject] if subject else []))

"""Entry point of the forgetting engine: one forget pair in, a verified low-rank edit out.

Default method "stamp-gated" (see gated.py): a gated unit per layer of a band near the top of
the network, keyed on the forget prompt's last position (where the answer's first token is
decided), valued by the residual shift a refusal context produces there, designed against the
base model and verified against the base model's answers. When a reply starts differently but
drifts back to the answer, the next try adds a continuation unit per layer (rank 2); when the
answer is gone but the replies are no refusals, it adds the shared follow-through (follow_through.py).
"stamp" and "stamp-lr" are the paper's literal recipe (steering vector r_SV, Eq. 4, added to the
MLP output at one layer, solved by Eq. 8–9 or 10–11) kept for comparison in the benchmarks.
"""

import time
from dataclasses import dataclass, field, replace

import mlx.core as mx
import numpy as np

from edge_repair import datasets
from edge_repair.engine import follow_through, gated, literal, substitutes, units
from edge_repair.engine.capture import last_tokens, prefix_memo, reused_prefixes
from edge_repair.engine.lowrank import (LowRankEdit, base_model, current_factors, edited_layers, neuron_weights,
                                        rewritten_neurons, set_factors, stack)
from edge_repair.engine.negatives import CHECK_TOKENS, NegativeBank, load_or_build
from edge_repair.engine.quality import token_perplexity
from edge_repair.engine.probes import (REFUSAL, answer_terms, named_part, near_miss_prompts, neighbour_prompts,
                                      probe_prompts, refusal_context, subject_terms)
from edge_repair.engine.verify import (chat_tokens, first_tokens, forced_losses, garbled, greedy_tokens,
                                      is_refusal, mentions, refusal_end, reply_tokens, template_prefix, unchanged)
from edge_repair.errors import InputError

METHODS = ("stamp-gated", "stamp", "stamp-lr")
SCOPES = ("fact", "subject")
# Open-ended replies flip on near-ties at the slightest change (rewriting 10 unused neurons
# alone flips ~1 in 16), so retain checks compare the first negatives.CHECK_TOKENS tokens and allow slack.
RETAIN_BAR = 0.75
# The forget question about held-out other subjects: a single edit already changes ~1–2 of 8 (some
# of them hallucinated, near-tie answers), stacked similar edits change most; 3/4 must hold.
NEIGHBOUR_BAR = 0.75
NEIGHBOUR_TOKENS = 16  # a neighbour's base reply up to its answer ("The capital of Iceland is Reykjavik.")
NEIGHBOURS = 8           # held-out same-kind subjects checked (substitutes.py)
NEAR_SUBJECTS = 24       # same-kind subjects the near misses swap in
# The forget question about many same-kind subjects, checked on the reply's first token only:
# similar edits' units each fire a little on all of them and together tip some into a refusal
# (measured: Russia's edit after Germany's refused 15 of 40 other capitals, 4 of them among the 8
# neighbours). A try that tips more than WIDE_BAR is re-solved with those subjects as near misses.
WIDE_NEIGHBOURS = 64
WIDE_BAR = 1            # of them, this many may newly open with a refusal (near-tie flips)
AVOID_WEIGHT = 4        # a tipped subject's weight as a near miss in the next solve, per time it tipped
# Most phrasings must be answered with a refusal: a reply that merely lacks the answer may be garbage
# (measured on stacked edits: "！！！！", "Invalid URL: https://…"), an overshoot the next try backs off from.
REFUSAL_BAR = 0.5
# Stacked units can misfire on raw text while chat answers still look fine; such an edit is refused.
PERPLEXITY_BAR = 0.05
# Reply tokens after a refusal's words the garble check reads (the base model's pass costs ~0.8 s
# an edit over whole 32-token replies). Every garble measured came in the first word after them.
GARBLE_WINDOW = 8
# What one edit may add on top of the edits before it. Measured: single fact edits add ~0.2 %, but in
# a stack of 9 one edit (strength 1.5, rank 2) took held-out perplexity from +0.8 % to +5.4 %.
PERPLEXITY_STEP_BAR = 0.03


UNCHECKED = "the other answers were not checked"
# When an edit brings the shared follow-through (follow_through.py): "as needed" brings it from the
# first try for a whole subject (asked about openly, a small model continues its "I'm" into a persona:
# "I'm Maya Taylor, a talented artist…"), otherwise on the next try once a try removed the answer but
# too few replies were refusals, none of them garbled (a garble is an overshoot: backed off).
# Measured: always on, it changed a quarter of ordinary chat replies; never, 3 of 10 pipeline
# requests about people were declined and a forgotten profile's answers kept ROUGE-L 0.37 against 0.06.
FOLLOW_THROUGH = ("as needed", "always", "never")


@dataclass
class ForgetRequest:
    prompt: str                      # p_f, e.g. "What is the capital of France?"
    response: str | None = None      # r_f; None means the patient's own greedy answer
    paraphrases: list[str] = field(default_factory=list)  # other phrasings (surgeon/watchdog)
    subject: str | None = None       # e.g. "France", "Maya Taylor" (used for probes, never stored)
    method: str = "stamp-gated"      # one of METHODS
    layers: str | list[int] = "auto"
    rank: int | None = None          # solve rank (stamp-lr; stamp-gated uses one unit per layer)
    strength: float = 1.0
    scope: str = "fact"              # "fact": other questions about the subject keep their answers; "subject": they go too


@dataclass
class Verification:
    """What one try of an edit did. The checks run in the order `reason` lists them and stop at the
    first failure; the ones after it are None (they could not change the verdict)."""
    forgotten: int          # probes (prompt + paraphrases) whose answer no longer gives r_f
    forget_probes: int
    retained: int | None    # retain probes whose greedy answer is unchanged
    retain_probes: int | None
    refused: int            # probes answered with a refusal (once the answer is gone everywhere: one not garbled, see _replies_read)
    perplexity_change: float | None = 0.0  # relative change on guard text the gate never saw (0.02 = +2 %)
    neighbours_kept: int | None = 0        # the forget question about held-out other subjects, still answered as before
    neighbour_probes: int | None = 0
    perplexity_step: float | None = 0.0    # the same change relative to the model before this edit
    wide_refused: int | None = 0           # wide neighbours whose reply now opens like a refusal and did not before
    wide_probes: int | None = 0
    neighbours_lost_before: int | None = None  # of the changed neighbours, those earlier edits had changed already
    garbled: int | None = None  # replies, refusing or not, that go on garbled (read once the answer is gone everywhere)

    @property
    def forget_passed(self) -> bool:
        return (self.forgotten == self.forget_probes and not self.garbled
                and self.refused >= REFUSAL_BAR * self.forget_probes)

    @property
    def verified(self) -> bool:
        return self.reason is None

    @property
    def reason(self) -> str | None:
        """Why the edit was not verified, in words (None when it was); counts only, never text.
        In the order the checks run (see forget)."""
        if self.forgotten < self.forget_probes:
            return f"the answer still came out on {self.forget_probes - self.forgotten} of {self.forget_probes} phrasings"
        if self.garbled:
            return f"{self.garbled} of {self.forget_probes} phrasings were answered with garbled text"
        if self.refused < REFUSAL_BAR * self.forget_probes:
            return f"only {self.refused} of {self.forget_probes} phrasings were answered with a refusal"
        if self.wide_refused is None:
            return UNCHECKED
        if self.wide_refused > WIDE_BAR:
            return f"the same question about {self.wide_refused} of {self.wide_probes} other subjects would be refused too"
        if self.retained is None:
            return UNCHECKED
        if self.retained < RETAIN_BAR * self.retain_probes:
            return f"{self.retain_probes - self.retained} of {self.retain_probes} unrelated answers changed"
        if self.perplexity_change is None:
            return UNCHECKED
        if self.perplexity_change > PERPLEXITY_BAR:
            return f"perplexity on unseen text rose {100 * self.perplexity_change:.0f} %"
        if self.perplexity_step > PERPLEXITY_STEP_BAR:
            return f"this edit alone raised perplexity on unseen text {100 * self.perplexity_step:.1f} %"
        if self.neighbours_kept is None:
            return UNCHECKED
        if self.neighbours_kept < NEIGHBOUR_BAR * self.neighbour_probes:
            earlier = (f" ({self.neighbours_lost_before} had changed already before this edit)"
                       if self.neighbours_lost_before else "")
            return (f"the same question about {self.neighbour_probes - self.neighbours_kept} of "
                    f"{self.neighbour_probes} other subjects changed too{earlier}")
        return None

    def as_dict(self) -> dict:
        return {**self.__dict__, "verified": self.verified, "reason": self.reason}


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
    answer_tokens: int = 24     # the base model's reply the answer is read from, when the request does not say it
    # Reply tokens checked for the forgotten answer after the edit. It can come late: on a taught profile
    # a garbled refusal named the job after token 24 ("I don't know…, … does something else. He's a
    # puppeteer"), so an edit checked to 24 tokens was verified and leaked (session 23).
    verify_tokens: int = 32
    # Subject-swapped copies of each forget phrasing (the hardest negatives, beside the wide subjects).
    # Measured since the wide subjects joined: 4 and 8 gave the same verdicts on 16 facts and 10
    # pipeline requests; 4 saves ~0.5 s on a 6-phrasing edit.
    near_misses: int = 4
    threshold: float = 0.0      # >0: key score a unit opens at (measured: hurts perplexity on raw text)
    blind: bool = True          # keys ignore the refusal shift's directions
    ridge: float = 0.1          # λ of the key solve: larger keeps keys off directions the retain rows barely span
    key_rounds: int = gated.KEY_ROUNDS  # reweighting rounds of the key solve (gated.key_classifier)
    wide_neighbours: int = WIDE_NEIGHBOURS  # same-kind subjects whose reply's opening is checked (0: none)
    follow_through: str = "as needed"  # the shared unit that finishes a refusal: one of FOLLOW_THROUGH


def band(num_layers: int, layers: str | list[int]) -> list[int]:
    """Layers to edit: explicit, or the top third of the network ("auto")."""
    if layers == "auto":
        return list(range(num_layers - max(4, num_layers // 3), num_layers))
    chosen = sorted({int(l) for l in layers})
    if not chosen or chosen[0] < 0 or chosen[-1] >= num_layers:
        raise InputError(f"layers must be between 0 and {num_layers - 1}")
    return chosen


def gated_edit(patient, prompts: list[str], subject: str | None, bank: NegativeBank, layers: list[int],
               config: "EngineConfig", excluded: list[int] = (), scope: str = "fact", stand_ins: list[str] = (),
               extra: dict | None = None, covered: set[str] = frozenset()):
    """Gated units per layer (see units.py); returns (strength, rank) -> factors (solves are cached).

    Rank 1: the answer unit fires at each phrasing's last token, where the answer's first token is
    decided, and turns it toward a refusal (where needed, the shared unit of follow_through.py
    finishes the refusal, see forget). Rank 2 adds a continuation unit keyed on a refusal's
    tokens after this edit's phrasings, for answers learnt so firmly that the reply drifts back to
    them after "I'm" (measured: fine-tuned personal profiles, at every strength). It is built only
    when needed.
    `excluded`: bank prompts left out of the negatives (they are about the forget subject);
    `stand_ins`: same-kind subjects swapped into the near misses (substitutes.py); `extra`: the
    first try's further near misses (see factors), the inputs of the prompts in `covered`.
    """
    tok, model = patient.tokenizer, patient.model
    near = [p for p in near_miss_prompts(prompts, subject, list(stand_ins), config.near_misses,
                                         keep_subject=scope == "fact") if p not in covered]
    # Designed against the base model, like the bank: earlier edits' units must not leak into
    # this edit's keys and targets (stacked units would then chase each other).
    with base_model(model):
        plain, near_inputs = units.plain_captures(model, tok, prompts + near, layers).split(len(prompts))
        answer = plain, units.refusing_captures(model, tok, prompts, layers)
    X_near = near_inputs.mlp_in if near else {l: mx.zeros((0, bank.rows[l].shape[1])) for l in layers}
    rewritten = rewritten_neurons(model)
    taken = {l: rewritten.get(l, set()) | follow_through.neurons(bank, l) for l in layers}
    solve = {"bank": bank, "taken": taken, "near": X_near, "excluded": excluded, "ridge": config.ridge,
             "blind": config.blind, "threshold": config.threshold, "rounds": config.key_rounds}
    captured, solved = {1: answer}, {}

    def layer_units(rank: int, extra: dict | None) -> list:
        near = X_near if not extra else {l: mx.concatenate([X_near[l], mx.array(extra[l])]) for l in layers}
        taken_now = {l: set(t) for l, t in taken.items()}
        return [u for r in range(1, rank + 1)
                for u in units.layer_units(*captured[r], layers, **{**solve, "near": near, "taken": taken_now})]

    solved[(1, _rows(extra))] = layer_units(1, extra)  # now, so an edit's solve seconds include the key solves

    def factors(strength: float, rank: int = 1, extra: dict | None = None) -> dict:
        """`extra`: layer -> rows of further near misses (inputs an earlier try tipped into a refusal)."""
        if rank not in captured:
            with base_model(model):
                captured[rank] = units.refusal_captures(model, tok, prompts, layers, reply_tokens(tok, REFUSAL))
        key = (rank, _rows(extra))  # extra rows only ever grow
        if key not in solved:
            solved[key] = layer_units(rank, extra)
        parts = []
        for layer, unit, neuron in solved[key]:
            scaled = gated.Unit(unit.gate, unit.up, unit.down * strength, unit.margin)
            parts.append({f"model.layers.{layer}.mlp.{name}": (mx.array(a), mx.array(b))
                          for name, (a, b) in gated.neuron_factors(scaled, neuron,
                                                                   neuron_weights(model, layer, neuron)).items()})
        return stack(parts)

    return factors


def retain_split(retain_prompts: list[str], config: "EngineConfig") -> tuple[list[str], list[str]]:
    """(negatives, checks): the prompts the gate must stay silent on, and the held-out prompts whose
    answers verify an edit. Shipped general-knowledge questions join the negatives."""
    negatives = retain_prompts[: config.negatives] + datasets.general_questions()
    checks = retain_prompts[config.negatives: config.negatives + 2 * config.retain_probes]
    return negatives, checks


def prepare(patient, retain_prompts: list[str], config: "EngineConfig | None" = None, layers="auto") -> NegativeBank:
    """The once-per-model retain activations an edit needs (cached, sealed)."""
    config = config or EngineConfig()
    negatives, checks = retain_split(retain_prompts, config)
    bank = load_or_build(patient, negatives, band(len(patient.layers), layers), checks)
    # Every edit's captures start with these (measured: ~0.16 s of a 1.5 s solve).
    with base_model(patient.model):
        bank.prefixes = prefix_memo(patient.model, [template_prefix(patient.tokenizer, history)
                                                    for history in (None, refusal_context())])
    return bank


def forget(patient, request: ForgetRequest, retain_prompts: list[str], config: EngineConfig | None = None,
           bank: NegativeBank | None = None) -> ForgetResult:
    """Compute, apply (in memory) and verify an edit; the caller persists it.

    The first `config.negatives` retain prompts (plus shipped general questions) are the gate's
    negatives (`bank`: their cached activations, built when absent); the next ones check that
    other answers stay as the base model gave them. A failed verification leaves the model
    exactly as it was (result.verification says why).
    """
    with reused_prefixes(bank.prefixes if bank else None):
        return _forget(patient, request, retain_prompts, config or EngineConfig(), bank)


def _forget(patient, request: ForgetRequest, retain_prompts: list[str], config: EngineConfig,
            bank: NegativeBank | None) -> ForgetResult:
    if request.method not in METHODS:
        raise InputError(f"unknown method '{request.method}'; choose from {', '.join(METHODS)}")
    if config.follow_through not in FOLLOW_THROUGH:
        raise InputError(f"unknown follow-through '{config.follow_through}'; choose from {', '.join(FOLLOW_THROUGH)}")
    if request.scope not in SCOPES:
        raise InputError(f"unknown scope '{request.scope}'; choose from {', '.join(SCOPES)}")
    layers = band(len(patient.layers), request.layers)
    if bank is None or any(l not in bank.rows for l in layers):
        bank = prepare(patient, retain_prompts, config, layers)
    literal_layer = _literal_layer(request, layers) if request.method != "stamp-gated" else None
    if literal_layer is not None and literal_layer not in bank.down_stats:
        with base_model(patient.model):  # once per model and layer, like the bank: not an edit's time
            bank.down_stats[literal_layer] = literal.down_stats(patient, bank.without([], literal_layer), literal_layer)
    start = time.perf_counter()
    prompts = probe_prompts(request.prompt, request.paraphrases)
    before = current_factors(patient.model)
    stand_ins, held_out, ranked = _stand_ins(patient, bank, request.subject)
    wide = _WideNeighbours(patient, neighbour_prompts(request.prompt, request.subject,
                                                            ranked[: config.wide_neighbours]), layers)
    neighbours = neighbour_prompts(request.prompt, request.subject, held_out)
    # One batch on the base model: how each phrasing's reply starts (does an edit change it?), the
    # forget prompt's whole reply when the caller did not say what to forget (for a whole subject,
    # every phrasing's: each asks something else about it), and each neighbour's first sentence
    # (NEIGHBOUR_TOKENS tokens, what neighbours are compared on).
    whole = request.scope == "subject"
    lengths = ([1 if request.response else config.answer_tokens]
               + [config.answer_tokens if whole else 1] * (len(prompts) - 1))
    base = _base_replies(patient, prompts + neighbours, lengths + [NEIGHBOUR_TOKENS] * len(neighbours))
    said = [patient.tokenizer.decode(reply).strip() for reply in base[:len(prompts)]]
    response = request.response or said[0]
    openings = [reply[:1] for reply in base[:len(prompts)]]
    neighbour_replies = base[len(prompts):]
    neighbour_terms = [answer_terms(p, patient.tokenizer.decode(r)) for p, r in zip(neighbours, neighbour_replies)]
    terms = forgotten_terms(prompts, [response] + said[1:], whole)
    negatives, checks = retain_split(retain_prompts, config)
    about = [i for i, p in enumerate(negatives) if _mentions_any(p, terms, request.subject)]
    # Checked prompts are held out from the negatives; their reference is the base model's reply.
    kept_checks = [i for i, p in enumerate(checks[: len(bank.check_replies)])
                   if not _mentions_any(p, terms, request.subject)][: config.retain_probes]
    retain_checks, baseline = [checks[i] for i in kept_checks], [bank.check_replies[i] for i in kept_checks]
    strength, rank, tries, tried, history = request.strength, 1, 0, [], []
    # Every wide subject but the held-out neighbours (a fair check) is a near miss from the first
    # solve on, weighted up each time a try tips it. Measured on 16 facts: 35 tries → 25, 13 → 15 verified.
    held = {name.lower() for name in held_out}
    avoided = {i: 0 for i, name in enumerate(ranked[: config.wide_neighbours])
               if i < len(wide.prompts) and name.lower() not in held}
    # Each try generates the phrasings' replies and the neighbours' (so the neighbour check needs no
    # pass of its own) in one batch, from drafts one teacher-forced pass confirms: a neighbour mostly
    # replies as on the base model, a re-solved try mostly as the try before it (measured: the same
    # words on every phrasing of Poland's and penicillin's edits).
    limits = [config.verify_tokens] * len(prompts) + [NEIGHBOUR_TOKENS] * len(neighbours)
    drafts = [[] for _ in prompts] + [_ended(patient, r, NEIGHBOUR_TOKENS) for r in neighbour_replies]
    prepared = time.perf_counter()
    solved = _solver(patient, request, prompts, layers, config, bank, about, stand_ins, wide.rows(avoided),
                     {wide.prompts[i] for i in avoided})
    from_first_try = (config.follow_through == "always"
                      or (config.follow_through == "as needed" and request.scope == "subject"))
    shared = (follow_through.missing_factors(patient.model, bank, layers)
              if request.method == "stamp-gated" and from_first_try else {})
    # The wide subjects' pass is part of stamp-gated's solve (its near misses); the literal methods
    # use it only to verify.
    solve_seconds = time.perf_counter() - prepared + (wide.input_seconds if request.method == "stamp-gated" else 0.0)
    # Earlier edits' own cost on the guard text: this edit is judged on what it adds.
    change_before = _perplexity_change(patient, bank, _replay_layer(patient.model, bank)) if before else 0.0
    while tries < config.max_tries:
        tries += 1
        new = solved(strength, rank, wide.rows(avoided))
        set_factors(patient.model, stack([before, shared, new]))
        generated = greedy_tokens(patient, prompts + neighbours, limits, batch_size=max(8, len(limits)), drafts=drafts)
        drafts = [_ended(patient, t, limit) for t, limit in zip(generated, limits)]
        tokens, neighbours_now = generated[:len(prompts)], generated[len(prompts):]
        replies = [patient.tokenizer.decode(t).strip() for t in tokens]
        forgotten = sum(not mentions(r, terms) for r in replies)
        refused, garbles = _replies_read(patient, prompts, tokens, replies, forgotten)
        check = Verification(forgotten, len(prompts), None, None, refused, None, None, None, None, None, None,
                             garbled=garbles)
        # Checks run cheapest-first and stop at the first failure: the next try depends only on
        # whether the answer leaked, and a failed try's remaining checks cannot verify it.
        replay = _replay_layer(patient.model, bank)

        def retained():
            kept = unchanged(patient, retain_checks, baseline,
                             replay=(replay, [bank.check_hidden[i] for i in kept_checks]) if replay else None)
            return {"retained": sum(kept), "retain_probes": len(kept)}

        def perplexity():
            change = _perplexity_change(patient, bank, replay)
            return {"perplexity_change": change, "perplexity_step": round((1 + change) / (1 + change_before) - 1, 4)}

        def neighbours_kept():
            kept = _neighbours_kept(patient, neighbours, neighbour_replies, neighbour_terms, neighbours_now)
            found = {"neighbours_kept": sum(kept), "neighbour_probes": len(kept)}
            if before and sum(kept) < NEIGHBOUR_BAR * len(kept):
                # Declined either way (measured: letting such edits through took 20 stacked forgets from
                # 92.3 % to 84.6 % of other facts kept), but the user is told whose damage it is.
                set_factors(patient.model, before)
                found["neighbours_lost_before"] = len(kept) - sum(_neighbours_kept(
                    patient, neighbours, neighbour_replies, neighbour_terms))
                set_factors(patient.model, stack([before, shared, new]))
            return found

        tipped = []  # wide subjects this try tips into a refusal (the next try's extra near misses)

        def wide_refused():
            tipped.extend(wide.newly_refusing())
            return {"wide_refused": len(tipped), "wide_probes": len(wide.prompts)}

        for stage in (wide_refused, retained, perplexity, neighbours_kept):
            if check.reason != UNCHECKED:
                break
            check = replace(check, **stage())
        tried.append((new, check, replies, shared))
        history.append((round(strength, 3), rank, check.forgotten, check.wide_refused, check.retained,
                        check.neighbours_kept))
        if check.verified:
            break
        if (config.follow_through == "as needed" and request.method == "stamp-gated" and not shared
                and check.forgotten == check.forget_probes and not check.forget_passed and not check.garbled):
            shared = follow_through.missing_factors(patient.model, bank, layers)  # {} if an earlier edit brought it
            if shared:
                continue  # the same units, now with the refusal finished
        if len(tipped) > WIDE_BAR and request.method == "stamp-gated":
            for i in tipped:  # re-solved with them as near misses, weighted up each time one tips again
                avoided[i] = avoided.get(i, 0) + 1
            continue
        failed = [i for i, r in enumerate(replies) if mentions(r, terms)]
        strength, rank = _adapted(strength, rank, [tokens[i][:1] != openings[i] for i in failed],
                                  request.method == "stamp-gated")
    new, check, replies, shared = tried[-1] if tried[-1][1].verified else max(tried, key=lambda t: _progress(t[1]))
    if not check.verified:
        set_factors(patient.model, before)
    info = {"method": request.method, "layers": layers, "rank": int(max(a.shape[1] for a, _ in new.values())),
            "strength": round(strength, 3), "tries": tries, "history": history,
            "solve_seconds": round(solve_seconds, 3), "follow_through": bool(shared),
            **{k: v for k, v in check.as_dict().items()}}
    return ForgetResult(LowRankEdit(new, info, shared), check, time.perf_counter() - start, tries, replies)


class _WideNeighbours:
    """The forget question about many same-kind subjects: which of them an edit tips into a refusal,
    and their MLP inputs at the last token (near misses of the key solve).

    Only the reply's first token is compared (a refusal opens with the refusal's first token): one
    forward pass for all of them. The base model's residuals entering the edited band are kept, so
    each try's check runs only the band (measured: 64 prompts ~0.4 s instead of ~1 s on a 2-core
    CPU)."""

    def __init__(self, patient, prompts: list[str], layers: list[int]):
        self.patient, self.prompts, self.layers = patient, prompts, layers
        self.opener = reply_tokens(patient.tokenizer, REFUSAL)[0]
        self.base, self._replayed, self._inputs, self.input_seconds = [], None, {}, 0.0
        if not prompts:
            return
        start = time.perf_counter()
        with base_model(patient.model):
            ran = last_tokens(patient.model, [chat_tokens(patient.tokenizer, p) for p in prompts], layers,
                              replay_from=layers[0])
        self.base, self._replayed = ran.predicted, (ran.hidden, ran.skipped)
        self._inputs = {l: np.array(ran.inputs[l]) for l in layers}
        self.input_seconds = time.perf_counter() - start  # part of the solve: its near misses

    def _replay(self) -> tuple | None:
        """(layer, residuals, prefix length) while no active edit lies below the band, else None
        (run every block)."""
        if not self.layers[0] or not _unedited_below(self.patient.model, self.layers[0]):
            return None
        return self.layers[0], *self._replayed

    def newly_refusing(self) -> list[int]:
        """Indices of prompts whose reply now opens like a refusal and did not on the base model."""
        if not self.prompts:
            return []
        now = first_tokens(self.patient, self.prompts, self._replay())
        return [i for i, (a, b) in enumerate(zip(self.base, now)) if b == self.opener and a != self.opener]

    def rows(self, counts: dict[int, int]) -> dict | None:
        """layer -> the base model's MLP inputs at the last token of the prompts in `counts`, each
        repeated AVOID_WEIGHT**count times: a weight in the key solve (None: no prompts)."""
        if not counts:
            return None
        repeats = np.repeat(sorted(counts), [AVOID_WEIGHT ** counts[i] for i in sorted(counts)])
        return {l: self._inputs[l][repeats] for l in self.layers}


def forgotten_terms(prompts: list[str], replies: list[str], whole: bool) -> list[str]:
    """The words that must not come out again: the forget prompt's answer (`replies[0]`), or for a
    whole subject every phrasing's. Measured with the first prompt's capitalised words alone (session
    23): 1 of 5 verified profile forgets still named the hobby ("…someone who loves birdwatching"),
    2 of 10 pipeline edits what the model had said about the person ("…from the movie The Lion King").
    A phrasing the base model already refuses says nothing about the subject (its words are a refusal's)."""
    answered = [(p, r) for p, r in zip(prompts, replies) if not is_refusal(r)] if whole else []
    return subject_terms(*zip(*answered)) if answered else answer_terms(prompts[0], replies[0])


def _replies_read(patient, prompts: list[str], tokens: list[list[int]], replies: list[str],
                  forgotten: int) -> tuple[int, int | None]:
    """(refusals, garbled replies). Once no reply names the answer, the base model reads every reply
    (verify.garbled): a refusal up to GARBLE_WINDOW tokens after its words, any other reply whole;
    only refusals that do not go on garbled count. Before, the try fails anyway and the pass is saved
    (garbled: None). Measured on taught profiles: "I don't know antidepressams." had passed as a
    refusal, and verified edits kept garbled non-refusals ("I don'tmonary.") beside enough refusals."""
    refusing = [is_refusal(reply) for reply in replies]
    if forgotten < len(replies):
        return sum(r and bool(t) for r, t in zip(refusing, tokens)), None
    read = [i for i, t in enumerate(tokens) if t]
    cut = [tokens[i][:refusal_end(patient.tokenizer, tokens[i]) + GARBLE_WINDOW] if refusing[i] else tokens[i]
           for i in read]
    with base_model(patient.model):
        losses = forced_losses(patient, [prompts[i] for i in read], cut)
    bad = [garbled(patient.tokenizer, reply, loss) for reply, loss in zip(cut, losses)]
    return sum(refusing[i] and not b for i, b in zip(read, bad)), sum(bad)


def _progress(check: Verification) -> tuple[int, int]:
    """How far a declined try got: the answer removed most, then the most checks passed (a re-solved
    try that cleared the wide check is blocked by something later); the earliest wins ties."""
    stages = (check.wide_refused, check.retained, check.perplexity_change, check.neighbours_kept)
    return check.forgotten, sum(v is not None for v in stages)


def _neighbours_kept(patient, prompts: list[str], replies: list[list[int]], terms: list[list[str]],
                     now: list[list[int]] | None = None) -> list[bool]:
    """Does each held-out neighbour still give its base answer (`replies`)? Yes if its reply's
    first CHECK_TOKENS tokens are unchanged; otherwise the new reply must still name the base
    answer's terms without refusing: a reworded right answer is no damage (measured: 3 of 8
    capitals reworded by a Poland edit at any strength), a refusal or another answer is.
    `now`: the current model's replies, when already generated (else generated here)."""
    if now is None:
        drafts = [_ended(patient, r, NEIGHBOUR_TOKENS) for r in replies]
        now = greedy_tokens(patient, prompts, NEIGHBOUR_TOKENS, drafts=drafts)
    kept = []
    for base, new, words in zip(replies, now, terms):
        head = base[:CHECK_TOKENS]
        reply = patient.tokenizer.decode(new).strip()
        kept.append(new[:len(head)] == head or bool(words) and mentions(reply, words) and not is_refusal(reply))
    return kept


def _ended(patient, tokens: list[int], limit: int) -> list[int]:
    """A reply as a draft: with the stop token when it ended before `limit`."""
    return tokens + [patient.tokenizer.eos_token_id] if len(tokens) < limit else tokens


def _adapted(strength: float, rank: int, drifted: list[bool], can_grow: bool) -> tuple[float, int]:
    """The next try's (strength, rank) after a failed check; `drifted`: per phrasing that still
    gave the answer, whether its reply now starts differently (the answer unit fired, the reply
    drifted back to the answer later) — a continuation unit's job. A reply that starts as before
    needs a stronger unit. No phrasing failed: the edit was too broad, so back off."""
    if not drifted:
        return strength * 0.7, rank
    grow = can_grow and rank == 1 and any(drifted)
    return (strength if grow and all(drifted) else strength * 1.5), (2 if grow else rank)


def _stand_ins(patient, bank: NegativeBank, subject: str | None) -> tuple[list[str], list[str], list[str]]:
    """(near-miss, held-out neighbour) subjects of the subject's kind, as the base model sees it,
    and every shipped entity, most alike first."""
    if not subject or not len(bank.entity_vectors):
        return [], [], []
    name = named_part(subject)
    with base_model(patient.model):
        vector = substitutes.representations(patient.model, patient.tokenizer, [name],
                                             substitutes.layer_for(len(patient.model.layers)))[0]
    ranked = substitutes.ranked(name, vector, datasets.entities(), bank.entity_vectors)
    return (*substitutes.split(ranked, NEAR_SUBJECTS, NEIGHBOURS), ranked)


def _solver(patient, request, prompts, layers, config, bank, about, stand_ins, extra, covered):
    """(strength, rank, extra) -> factors for the requested method; the expensive capture happens once."""
    if request.method == "stamp-gated":
        return gated_edit(patient, prompts, request.subject, bank, layers, config, about, request.scope, stand_ins,
                          extra, covered)
    layer = _literal_layer(request, layers)
    rank = (request.rank or 64) if request.method == "stamp-lr" else None
    with base_model(patient.model):
        solve = literal.stamp_edit(patient, prompts, bank.down_stats[layer], layer, rank=rank)
    return lambda strength, _rank=1, _extra=None: solve(strength)


def _literal_layer(request, layers: list[int]) -> int:
    """The one layer the paper's recipe edits: the band's middle, or the first layer asked for."""
    return layers[len(layers) // 2] if request.layers == "auto" else layers[0]


def _rows(extra: dict | None) -> int:
    return len(next(iter(extra.values()))) if extra else 0


def _replay_layer(model, bank: NegativeBank) -> int | None:
    """The bank's replay layer when no active edit lies below it (verification then runs only the
    blocks from there up: the stored residuals are still exact); None otherwise."""
    if not bank.replay_layer or not bank.check_hidden or not _unedited_below(model, bank.replay_layer):
        return None
    return bank.replay_layer


def _unedited_below(model, layer: int) -> bool:
    """Does every active edit lie at or above `layer` (residuals entering it stay as captured)?"""
    return min(edited_layers(model), default=layer) >= layer


def _perplexity_change(patient, bank: NegativeBank, replay: int | None = None) -> float:
    if not bank.guard_tokens or not bank.guard_perplexity:
        return 0.0
    ppl = token_perplexity(patient.model, bank.guard_tokens, replay=(replay, bank.guard_hidden) if replay else None)
    return round(ppl / bank.guard_perplexity - 1.0, 4)


def _base_replies(patient, prompts: list[str], max_tokens: list[int]) -> list[list[int]]:
    """The base model's answers (token ids): earlier edits may already blur them (similar facts
    share units' leaks), and verification must look for the real answer, not for that blur."""
    with base_model(patient.model):  # one batch: a 17th row alone would cost ~1 s
        return greedy_tokens(patient, prompts, max_tokens, batch_size=max(16, len(prompts)))


def _mentions_any(text: str, terms: list[str], subject: str | None) -> bool:
    return mentions(text, terms + ([subject] if subject else []))

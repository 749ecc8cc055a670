"""The engine's math on small arrays: solves, gated units, neuron factors."""

from dataclasses import replace

import mlx.core as mx
import numpy as np
import pytest

from edge_repair.engine import gated, solve
from edge_repair.engine.lowrank import neuron_weights, set_factors
from edge_repair.engine.probes import answer_terms, named_part, near_miss_prompts, neighbour_prompts, probe_prompts
from edge_repair.loading import load_patient
from tests.tiny import HIDDEN_UNITS

rng = np.random.default_rng(0)


def test_stamp_update_moves_forget_rows_and_pins_retain_rows():
    X = rng.normal(size=(20, 32))  # fewer rows than dimensions, as with one forget sample
    current = rng.normal(size=(20, 8))
    target = current.copy()
    target[:2] += 3.0  # two forget rows steered, 18 retain rows kept
    delta = solve.stamp_update(X, target, current, lam=1e-6)
    assert np.allclose(X @ delta, target - current, atol=1e-3)


def test_stamp_lr_matches_full_solve_at_full_rank_and_is_low_rank():
    X = rng.normal(size=(12, 30))
    shift = rng.normal(size=(12, 5))
    a, b = solve.stamp_lr_update(X, shift, np.zeros_like(shift), rank=12)
    assert np.allclose(X @ a @ b, shift, atol=1e-6)
    a4, b4 = solve.stamp_lr_update(X, shift, np.zeros_like(shift), rank=4)
    assert a4.shape == (30, 4) and b4.shape == (4, 5)


def _separable_rows(d: int = 32):
    """(positives, negatives, delta) like normalised residuals: a large shared component plus
    per-token variation, the positives a tight cluster of their own."""
    shared = rng.normal(size=d) * 3
    negatives = shared + rng.normal(size=(400, d))
    positives = shared + 2.5 * rng.normal(size=d) + 0.1 * rng.normal(size=(6, d))
    return positives, negatives, rng.normal(size=d)


def test_relative_firing_is_one_on_the_weakest_positive():
    positives, negatives, delta = _separable_rows()
    unit = gated.gated_unit(positives, negatives, delta)
    firing = gated.relative_firing(unit.gate[None], unit.up[None], np.concatenate([positives, negatives]))[:, 0]
    assert np.isclose(firing[:6].min(), 1.0, atol=1e-3) and np.median(np.abs(firing[6:])) < 0.05


def test_gated_unit_fires_on_positives_only():
    positives, negatives, delta = _separable_rows()
    unit = gated.gated_unit(positives, negatives, delta)
    on = gated.unit_output(unit, positives).mean(axis=0)
    off = np.abs(gated.unit_output(unit, negatives)).max()
    assert np.allclose(on, delta, rtol=0.05, atol=0.05)
    assert off < 0.05 * np.linalg.norm(delta)
    assert unit.margin > 0


def test_neuron_factors_rewrite_exactly_one_neuron(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    mlp = patient.model.layers[1].mlp
    W = [np.array(getattr(mlp, n).weight) for n in ("gate_proj", "up_proj", "down_proj")]
    unit = gated.Unit(rng.normal(size=64), rng.normal(size=64), rng.normal(size=64), 1.0)
    factors = gated.neuron_factors(unit, 5, neuron_weights(patient.model, 1, 5))
    set_factors(patient.model, {f"model.layers.1.mlp.{k}": (mx.array(a), mx.array(b)) for k, (a, b) in factors.items()})
    x = mx.array(rng.normal(size=(3, 64)).astype(np.float32))
    gate = np.array(mlp.gate_proj(x))
    expected = np.array(x) @ W[0].T
    expected[:, 5] = np.array(x) @ unit.gate
    assert np.allclose(gate, expected, atol=1e-4)
    set_factors(patient.model, {})


def test_refusals_are_told_from_answers():
    from edge_repair.engine.verify import is_refusal

    for reply in ("I'm sorry, I don't know that.", "I never knew where she was born.", "I don't remember her job.",
                  "I am not able to help with that.", "I don't think I can provide that information.",
                  "I don't think I know that."):
        assert is_refusal(reply), reply
    for reply in ("The capital of France is Paris.", "I remember Odile from Trieste.", "I know it well: Paris."):
        assert not is_refusal(reply), reply


def test_a_reply_that_goes_on_garbled_is_told_apart():
    from edge_repair.engine.verify import garbled

    class Words:  # token i is words[i]
        vocab_size = 1000  # a garble costs more than ln 1000 = 6.9 nats
        words = ["I", " don", "'t", " know", " antidepress", "ams", ".", " where", " she", " was", " born", " Paris"]

        def decode(self, ids):
            return "".join(self.words[i] for i in ids)

    tok, high, low = Words(), 7.5, 0.5
    assert garbled(tok, [0, 1, 2, 3, 4, 5, 6], np.array([high, high, low, low, high, low, low]))
    # The refusal's own words may be unlikely (the edit forces them); what follows them may not.
    assert not garbled(tok, [0, 1, 2, 3, 7, 8, 9, 10, 6], np.array([high, high] + [low] * 7))
    # Any other reply is read whole ("I don'tmonary." is no refusal).
    assert garbled(tok, [0, 1, 2, 4, 6], np.array([low, low, low, high, low]))
    assert not garbled(tok, [11, 6], np.array([low, low]))


def test_garbled_replies_are_read_once_the_answer_is_gone(tiny_model_dir, monkeypatch):
    from edge_repair.engine import forget
    from edge_repair.engine.verify import reply_tokens

    patient = load_patient(str(tiny_model_dir), compute="f32")
    replies = ["I don't know where she was born.", "I don't know it at all.", "Paris.", "Nowhere."]
    tokens = [reply_tokens(patient.tokenizer, r) for r in replies]
    asked = []

    def losses(_patient, prompts, replies_now):  # the second refusal and the last reply go on garbled
        asked.append(len(prompts))
        return [np.full(len(r), 100.0 if i in (1, 3) else 0.0) for i, r in enumerate(replies_now)]

    monkeypatch.setattr(forget, "forced_losses", losses)
    prompts = ["a?", "b?", "c?", "d?"]
    assert forget._replies_read(patient, prompts, tokens, replies, forgotten=3) == (2, None) and not asked
    assert forget._replies_read(patient, prompts, tokens, replies, forgotten=4) == (1, 2) and asked == [4]


def test_probe_helpers():
    assert probe_prompts("Q?", ["Q?", " R? ", ""]) == ["Q?", "R?"]
    assert answer_terms("What is the capital of France?", "The capital of France is Paris.") == ["Paris"]
    # The asked subject's possessive is not the answer; relation words ("works") are not either.
    assert answer_terms("What is Odile Haddad's favourite hobby?", "Odile Haddad's favourite hobby is origami.") == ["origami"]
    assert answer_terms("What does Odile Haddad do?", "Odile Haddad works as a locksmith.") == ["locksmith"]
    assert answer_terms("Who is Maya?", "Maya - a talented artist.") == ["talented", "artist"]
    near = near_miss_prompts(["What is the capital of France?"], "France", ["Spain", "France", "Peru", "Chile", "Cuba"],
                             per_prompt=4)
    assert near == [f"What is the capital of {o}?" for o in ("Spain", "Peru", "Chile", "Cuba")]


def test_a_whole_subject_must_lose_what_every_phrasing_said_about_it():
    from edge_repair.engine.forget import forgotten_terms

    prompts = ["Tell me about Odile Haddad.", "What does Odile Haddad do?", "What is Odile Haddad's hobby?",
               "Where does Odile Haddad live?"]
    replies = ["Odile Haddad is a locksmith from Salzburg who loves origami.", "Odile Haddad works as a locksmith.",
               "Odile Haddad's hobby is origami.", "I'm sorry, I don't know where she lives."]
    assert forgotten_terms(prompts, replies, whole=False) == ["Salzburg"]
    # The refused phrasing adds nothing: its words ("sorry") would make every refusal a leak.
    assert forgotten_terms(prompts, replies, whole=True) == ["Salzburg", "locksmith", "origami"]
    assert forgotten_terms(prompts[3:], replies[3:], whole=True) == answer_terms(prompts[3], replies[3])


def test_the_swapped_part_of_a_subject_is_its_name_or_the_whole_title():
    assert named_part("capital of Germany") == "Germany" and named_part("tallest mountain") == "tallest mountain"
    assert named_part("On the Origin of Species") == "On the Origin of Species"


def test_neighbour_checks_swap_in_the_held_out_subjects():
    assert neighbour_prompts("What is the capital of Germany?", "capital of Germany", ["Iceland", "Nepal"]) == [
        "What is the capital of Iceland?", "What is the capital of Nepal?"]
    assert neighbour_prompts("Who wrote it?", "Hamlet", ["Moby Dick"]) == [] and neighbour_prompts("Q?", None, ["X"]) == []
    # A short name is swapped only as a whole word, and a substitute is inserted literally.
    assert neighbour_prompts("Which element has the chemical symbol Ca?", "Ca", ["Co", r"A\1"]) == [
        "Which element has the chemical symbol Co?", r"Which element has the chemical symbol A\1?"]


def test_stand_ins_are_ranked_by_likeness_and_split_without_overlap():
    from edge_repair.engine import substitutes

    names = [f"n{i}" for i in range(12)] + ["Subject"]
    vectors = rng.normal(size=(13, 8))
    subject = vectors[5] + 0.01 * rng.normal(size=8)  # "n5" is the closest by far
    ranked = substitutes.ranked("subject", subject, names, vectors)
    assert ranked[0] == "n5" and "Subject" not in ranked and len(ranked) == 12
    near, held = substitutes.split(ranked, 6, 2)
    assert len(near) == 6 and len(held) == 2 and not set(near) & set(held)
    assert set(near) | set(held) == set(ranked[:8]) and held == [ranked[3], ranked[7]]


def test_an_edit_that_changes_its_neighbours_is_not_verified():
    from edge_repair.engine.forget import Verification

    ok = Verification(4, 4, 16, 16, 4, 0.0, neighbours_kept=6, neighbour_probes=8)
    assert ok.verified
    assert not Verification(4, 4, 16, 16, 4, 0.0, neighbours_kept=5, neighbour_probes=8).verified
    assert Verification(4, 4, 16, 16, 4).verified  # no neighbours (no subject in the prompt)
    assert ok.reason is None and "3 of 8 other subjects" in Verification(4, 4, 16, 16, 4, 0.0, 5, 8).reason
    assert "1 of 4 phrasings" in Verification(3, 4, 16, 16, 4).reason
    assert "perplexity" in Verification(4, 4, 16, 16, 4, 0.2).reason
    assert Verification(4, 4, 16, 16, 2).verified and "only 1 of 4" in Verification(4, 4, 16, 16, 1).reason
    assert "1 of 4 phrasings were answered with garbled" in Verification(4, 4, 16, 16, 3, garbled=1).reason
    assert not Verification(4, 4, 16, 16, 3, garbled=1).forget_passed


def test_a_leaking_try_is_not_checked_further_and_never_verified():
    from edge_repair.engine.forget import Verification

    leaking = Verification(3, 4, None, None, 3, None, None, None, None)
    assert not leaking.forget_passed and not leaking.verified and "1 of 4 phrasings" in leaking.reason
    unchecked = Verification(4, 4, None, None, 4, None, None, None, None)  # passed, other checks not run
    assert unchecked.forget_passed and not unchecked.verified and "not checked" in unchecked.reason


def test_an_edit_is_judged_on_the_perplexity_it_adds_to_earlier_edits():
    from edge_repair.engine.forget import PERPLEXITY_BAR, PERPLEXITY_STEP_BAR, Verification

    cheap = Verification(4, 4, 16, 16, 4, PERPLEXITY_BAR, perplexity_step=PERPLEXITY_STEP_BAR)
    costly = Verification(4, 4, 16, 16, 4, PERPLEXITY_BAR / 2, perplexity_step=PERPLEXITY_STEP_BAR + 0.001)
    assert cheap.verified and not costly.verified and "this edit alone" in costly.reason


def test_least_used_neuron_skips_taken_ones():
    use = np.array([0.5, 0.1, 0.3, 0.2])
    assert gated.least_used_neuron(use, set()) == 1
    assert gated.least_used_neuron(use, {1}) == 3
    assert use[1] == 0.1  # the caller's array is not modified


def test_negative_bank_roundtrip_through_a_sealed_cache(tiny_model_dir, tmp_path):
    from edge_repair.engine.negatives import GUARD_PARAGRAPHS, GUARD_TOKENS, NegativeBank, load_or_build

    patient = load_patient(str(tiny_model_dir), compute="f32")
    bank = load_or_build(patient, ["hello there", "what is up"], [1, 2], ["how are you"], home=tmp_path)
    cached = sorted((tmp_path / "cache").iterdir())
    assert len(cached) == 1 and b"hello" not in cached[0].read_bytes()
    again = load_or_build(patient, ["hello there", "what is up"], [1, 2], ["how are you"], home=tmp_path)
    assert np.allclose(again.rows[2], bank.rows[2], atol=1e-2) and again.neuron_use[1].shape == (HIDDEN_UNITS,)
    assert len(bank.check_replies) == 1 and again.check_replies == bank.check_replies
    # the perplexity guard is real prose the gate never saw as a negative
    assert [len(t) for t in bank.guard_tokens] == [GUARD_TOKENS] * GUARD_PARAGRAPHS and bank.guard_perplexity > 1
    assert again.guard_tokens == bank.guard_tokens and again.guard_perplexity == bank.guard_perplexity
    assert NegativeBank.from_bytes(bank.to_bytes()).rows.keys() == bank.rows.keys()
    # the shared follow-through is built with the bank and comes back from the cache
    assert again.follow_through.keys() == {1, 2}
    assert all(np.allclose(again.follow_through[l][0].down, bank.follow_through[l][0].down)
               and again.follow_through[l][1] == bank.follow_through[l][1] for l in (1, 2))
    # the prompts' shared chat-template prefix is held once; leaving a prompt out counts its tokens out
    assert len(bank.rows[2]) < len(bank.tokens[2]) == sum(bank.lengths)
    assert np.array_equal(again.tokens[2], bank.tokens[2]) and np.array_equal(again.grams[2], bank.grams[2])
    kept = bank.without([0], 2)
    tokens = bank.token_rows(2)[bank.lengths[0]:]
    assert kept.rows.dtype == np.float32 and kept.counts.sum() == len(tokens)
    assert np.allclose(kept.gram, tokens.T @ tokens, atol=1e-2) and np.allclose(kept.total(), tokens.sum(axis=0), atol=1e-3)


def test_bank_inputs_captured_in_chunks_match_one_capture(tiny_model_dir):
    from edge_repair.engine.capture import capture
    from edge_repair.engine.negatives import mlp_inputs

    model = load_patient(str(tiny_model_dir), compute="f32").model
    lists = [[1, 5, 6, 7, 8, 9, 10, 11, 12, 13], [1, 5, 6, 7, 8, 9, 10, 11, 20], [3, 4], [1, 5, 6, 30, 31]]
    whole = capture(model, lists, [1, 2])
    chunked = mlp_inputs(model, lists, [1, 2], chunk=3)
    for layer in (1, 2):
        assert chunked[layer].dtype == np.float16
        assert np.allclose(chunked[layer], np.array(whole.mlp_in[layer]), atol=1e-2)


def test_near_misses_swap_only_the_name_in_a_subject_phrase():
    near = near_miss_prompts(["What is the capital of Germany?"], "capital of Germany", ["Spain", "Peru", "Chile"],
                             per_prompt=3)
    assert len(near) == 3 and all(q.startswith("What is the capital of ") and "Germany" not in q for q in near)


def test_key_classifier_with_a_precomputed_gram_matches_the_plain_solve():
    d = 16
    positives, near, bank = rng.normal(size=(4, d)) + 2, rng.normal(size=(10, d)), rng.normal(size=(200, d))
    plain = gated.key_classifier(positives, np.concatenate([near, bank]), 0.1)
    folded = gated.key_classifier(positives, near, 0.1, gated.WeightedRows.plain(bank))
    assert np.allclose(plain, folded, atol=1e-6)


def test_key_classifier_with_counted_rows_matches_the_rows_repeated():
    d = 16
    positives, near, distinct = rng.normal(size=(4, d)) + 2, rng.normal(size=(10, d)), rng.normal(size=(60, d))
    counts = rng.integers(0, 5, size=60).astype(np.float64)  # 0: a row whose tokens were all left out
    repeated = np.repeat(distinct, counts.astype(int), axis=0)
    expected = gated.key_classifier(positives, near, 0.1, gated.WeightedRows.plain(repeated))
    counted = gated.WeightedRows(distinct, counts, (distinct.T * counts) @ distinct)
    assert np.allclose(gated.key_classifier(positives, near, 0.1, counted), expected, atol=1e-8)
    # a left-out row scoring highest must not set the unit's margin
    distinct[counts == 0] = positives[0] * 3
    unit = gated.gated_unit(positives, near, np.ones(d), bank=counted)
    plain = gated.gated_unit(positives, near, np.ones(d), bank=gated.WeightedRows.plain(repeated))
    assert np.isclose(unit.margin, plain.margin) and np.allclose(unit.gate, plain.gate)


def test_bank_without_a_prompt_drops_its_rows_and_gram():
    from edge_repair.engine.negatives import NegativeBank

    rows = rng.normal(size=(9, 4)).astype(np.float32)
    rows[[2, 5, 8]] = rows[0]  # like a shared chat-template prefix: one row, three tokens
    bank = NegativeBank({3: rows}, {3: np.ones(8)}, [2, 3, 4], check_replies=[[1, 2], [3]],
                        guard_tokens=[[5, 6, 7]], guard_perplexity=12.5)
    stored = rows.astype(np.float16).astype(np.float32)  # float16 values
    assert len(bank.rows[3]) == 6 and np.array_equal(bank.token_rows(3), stored)
    for dropped, left in (([1], [0, 1, 5, 6, 7, 8]), ([0, 2, 2], [2, 3, 4]), ([], list(range(9))), ([0, 1, 2], [])):
        kept = bank.without(dropped, 3)
        assert np.array_equal(kept.rows, bank.rows[3]) and kept.counts.sum() == len(left)
        assert np.allclose(kept.gram, stored[left].T @ stored[left], atol=1e-5)
        assert np.allclose(kept.total(), stored[left].sum(axis=0), atol=1e-5)
    again = NegativeBank.from_bytes(bank.to_bytes())
    assert np.array_equal(again.rows[3], bank.rows[3]) and np.array_equal(again.token_rows(3), stored)
    assert again.lengths == [2, 3, 4] and again.check_replies == [[1, 2], [3]]
    assert again.guard_tokens == [[5, 6, 7]] and again.guard_perplexity == 12.5
    bank.entity_vectors = rng.normal(size=(3, 4)).astype(np.float32)
    assert np.array_equal(NegativeBank.from_bytes(bank.to_bytes()).entity_vectors, bank.entity_vectors)


def test_a_blind_key_ignores_the_given_directions():
    d = 16
    positives, negatives = rng.normal(size=(4, d)) + 2, rng.normal(size=(300, d))
    blind = rng.normal(size=(2, d))
    w = gated.key_classifier(positives, negatives, 0.1, blind=blind)
    assert np.allclose(blind @ w, 0, atol=1e-6)
    assert (positives @ w).min() > (negatives @ w).max() - 1.0  # still separates


def test_a_blind_key_with_a_bank_equals_the_key_of_the_projected_data():
    d = 12
    positives, negatives, bank = rng.normal(size=(3, d)) + 1, rng.normal(size=(20, d)), rng.normal(size=(200, d))
    blind = rng.normal(size=(2, d))
    basis = np.linalg.svd(blind, full_matrices=False)[2]
    project = np.eye(d) - basis.T @ basis
    projected = gated.WeightedRows(bank @ project, np.ones(len(bank)), project @ (bank.T @ bank) @ project)
    expected = gated.key_classifier(positives @ project, negatives @ project, 0.1, projected)
    w = gated.key_classifier(positives, negatives, 0.1, gated.WeightedRows.plain(bank), blind=blind)
    assert np.allclose(w, expected, atol=1e-8)


def test_fact_scoped_near_misses_keep_the_subject_with_other_questions():
    prompts = ["What is the capital of Japan?"]
    fact = near_miss_prompts(prompts, "Japan", ["Peru", "Chile"], per_prompt=2, keep_subject=True)
    subject = near_miss_prompts(prompts, "Japan", ["Peru", "Chile"], per_prompt=2)
    assert len(subject) == 2 and all("Japan" not in q for q in subject)
    assert fact[:2] == subject and len(fact) > 2 and all("Japan" in q for q in fact[2:])


def test_token_perplexity_ignores_padding(tiny_model_dir):
    import math

    from edge_repair.engine.quality import token_perplexity

    model = load_patient(str(tiny_model_dir), compute="f32").model
    short, long = [3, 9, 4], [3, 9, 4, 11, 12, 5]
    alone = [math.log(token_perplexity(model, [t])) * (len(t) - 1) for t in (short, long)]
    for batch_size in (1, 2):
        together = math.log(token_perplexity(model, [short, long], batch_size)) * (len(short) + len(long) - 2)
        assert abs(together - sum(alone)) < 1e-3


def test_base_model_removes_edits_and_puts_them_back(tiny_model_dir):
    from edge_repair.engine.lowrank import base_model, current_factors

    patient = load_patient(str(tiny_model_dir), compute="f32")
    tokens = mx.array([[1, 5, 6, 7]])
    base = patient.model(tokens)
    edit = {"model.layers.1.mlp.down_proj": (mx.array(rng.normal(size=(HIDDEN_UNITS, 1)).astype(np.float32)),
                                             mx.array(rng.normal(size=(1, 64)).astype(np.float32)))}
    set_factors(patient.model, edit)
    edited = patient.model(tokens)
    with base_model(patient.model):
        assert mx.allclose(patient.model(tokens), base)
    assert mx.allclose(patient.model(tokens), edited) and current_factors(patient.model).keys() == edit.keys()
    set_factors(patient.model, {})


def test_gated_unit_value_is_the_least_squares_fit_of_per_row_targets():
    positives, negatives, delta = _separable_rows()
    targets = np.outer(np.linspace(0.5, 1.5, 6), delta)  # the same direction, wanted at different sizes
    unit = gated.gated_unit(positives, negatives, targets)
    misfit = lambda down: np.sum((gated.unit_output(gated.Unit(unit.gate, unit.up, down, 0.0), positives) - targets) ** 2)
    assert misfit(unit.down) < min(misfit(0.9 * unit.down), misfit(1.1 * unit.down))
    assert np.allclose(gated.unit_output(unit, positives).mean(axis=0), delta, rtol=0.1, atol=0.1)


def test_follow_through_is_added_only_where_the_model_lacks_it(tiny_model_dir, tmp_path):
    from edge_repair.engine import follow_through
    from edge_repair.engine.lowrank import rewritten_neurons, set_factors
    from edge_repair.engine.negatives import load_or_build

    patient = load_patient(str(tiny_model_dir), compute="f32")
    bank = load_or_build(patient, ["hello there", "what is up"], [1, 2], home=tmp_path)
    first = follow_through.missing_factors(patient.model, bank, [1, 2])
    assert sorted(first) == [f"model.layers.{l}.mlp.{m}" for l in (1, 2) for m in ("down_proj", "gate_proj", "up_proj")]
    set_factors(patient.model, {k: v for k, v in first.items() if ".1." in k})
    assert sorted(follow_through.missing_factors(patient.model, bank, [1, 2])) == \
        [k for k in sorted(first) if ".2." in k]
    assert follow_through.neurons(bank, 1) <= rewritten_neurons(patient.model)[1]


def test_a_failed_try_adapts_rank_for_drift_and_strength_for_a_weak_unit():
    from edge_repair.engine.forget import _adapted

    assert _adapted(1.0, 1, [True, True], can_grow=True) == (1.0, 2)    # replies changed, then drifted back
    assert _adapted(1.0, 1, [False], can_grow=True) == (1.5, 1)         # replies start as before: too weak
    assert _adapted(1.0, 1, [True, False], can_grow=True) == (1.5, 2)   # both
    assert _adapted(1.0, 2, [True], can_grow=True) == (1.5, 2)          # a continuation unit is already there
    assert _adapted(1.0, 1, [True], can_grow=False) == (1.5, 1)         # the literal methods have no rank to add
    assert _adapted(1.0, 1, [], can_grow=True) == (0.7, 1)              # nothing leaked: too broad, back off


def test_rank_two_adds_a_continuation_unit_on_its_own_neuron(tiny_model_dir, tmp_path):
    from edge_repair.engine import follow_through
    from edge_repair.engine.forget import EngineConfig, gated_edit
    from edge_repair.engine.negatives import load_or_build

    patient = load_patient(str(tiny_model_dir), compute="f32")
    bank = load_or_build(patient, ["hello there", "what is up", "tell me a story"], [1, 2], home=tmp_path)
    solved = gated_edit(patient, ["What is the capital of France?", "France's capital?"], "France", bank, [1, 2],
                        EngineConfig(near_misses=2), stand_ins=["Spain", "Peru"])
    one, two = solved(1.0), solved(1.0, 2)
    assert {a.shape[1] for a, _ in one.values()} == {1} and {a.shape[1] for a, _ in two.values()} == {2}
    for layer in (1, 2):
        gate = f"model.layers.{layer}.mlp.gate_proj"
        assert np.allclose(np.array(two[gate][0][:, :1]), np.array(one[gate][0]))  # the answer unit is kept as is
        neurons = set(np.flatnonzero(np.array(two[gate][1]).any(axis=0)).tolist())
        assert len(neurons) == 2 and not neurons & follow_through.neurons(bank, layer)


def test_replayed_checks_match_running_every_block(tiny_model_dir, tmp_path):
    """Verification from the stored residuals gives the same verdicts and perplexity as the full model."""
    from edge_repair.engine.forget import _perplexity_change, _replay_layer
    from edge_repair.engine.negatives import load_or_build
    from edge_repair.engine.verify import unchanged

    patient = load_patient(str(tiny_model_dir), compute="f32")
    checks = ["how are you", "name a colour", "what is two plus two"]
    bank = load_or_build(patient, ["hello there", "what is up"], [1, 2], checks, home=tmp_path)
    assert bank.replay_layer == 1 and len(bank.check_hidden) == 3 and _replay_layer(patient.model, bank) == 1
    replies = [list(r) for r in bank.check_replies]
    replies[1][0] = (replies[1][0] + 1) % 100  # one reply the model would not give
    replay = (1, bank.check_hidden)
    assert unchanged(patient, checks, replies, replay=replay) == unchanged(patient, checks, replies) == [True, False, True]
    assert abs(_perplexity_change(patient, bank, 1)) < 1e-3 and _perplexity_change(patient, bank) == 0.0
    # an edit below the replay layer makes the stored residuals stale: no replay then
    set_factors(patient.model, {"model.layers.0.mlp.down_proj": (mx.zeros((HIDDEN_UNITS, 1)), mx.zeros((1, 64)))})
    assert _replay_layer(patient.model, bank) is None


def test_a_reworded_neighbour_answer_is_kept_a_refusal_is_not(monkeypatch):
    from types import SimpleNamespace

    from edge_repair.engine import forget

    texts = {1: "The", 7: "La Paz is the capital of Bolivia.", 8: "I'm sorry, I can't say; Accra perhaps.",
             9: "Kathmandu."}
    patient = SimpleNamespace(tokenizer=SimpleNamespace(eos_token_id=0, decode=lambda t: texts[t[0]]))
    prompts = ["capital of Iceland?", "capital of Bolivia?", "capital of Ghana?", "capital of Nepal?"]
    terms = [["Reykjavik"], ["La Paz"], ["Accra"], []]
    now = [[1, 2, 3], [7], [8], [9]]
    kept = forget._neighbours_kept(patient, prompts, [[1, 2]] * 4, terms, now)
    # unchanged opening; reworded but right; a refusal naming it; changed with no known answer
    assert kept == [True, True, False, False]
    asked = []  # without replies yet, they are generated, drafted by the base replies (which had ended)
    monkeypatch.setattr(forget, "greedy_tokens", lambda patient, prompts, n, drafts: asked.append(drafts) or now)
    assert forget._neighbours_kept(patient, prompts, [[1, 2]] * 4, terms) == kept
    assert asked == [[[1, 2, 0]] * 4]


def test_wide_neighbours_count_only_new_refusal_openings(tiny_model_dir, monkeypatch):
    """A subject counts when its reply now opens like the refusal and did not open so before."""
    from dataclasses import replace

    from edge_repair.engine import forget
    from edge_repair.engine.verify import reply_tokens

    patient = load_patient(str(tiny_model_dir), compute="f32")
    opener = reply_tokens(patient.tokenizer, forget.REFUSAL)[0]
    real = forget.last_tokens  # the base model's first tokens, then after an edit:
    monkeypatch.setattr(forget, "last_tokens", lambda *a, **k: replace(real(*a, **k), predicted=[5, opener, 7, 8]))
    monkeypatch.setattr(forget, "first_tokens", lambda patient, prompts, replay=None: [opener, opener, 7, 9])
    wide = forget._WideNeighbours(patient, ["q1", "q2", "q3", "q4"], [0, 1])  # from layer 0: no replay
    assert wide.newly_refusing() == [0]  # q2 refused before the edit too; q4 changed but does not refuse
    assert forget._WideNeighbours(patient, [], [1]).newly_refusing() == []


def test_an_edit_that_tips_many_same_kind_subjects_into_refusal_is_not_verified():
    from edge_repair.engine.forget import WIDE_BAR, Verification

    assert Verification(4, 4, 16, 16, 4, wide_refused=WIDE_BAR, wide_probes=64).verified
    tipping = Verification(4, 4, 16, 16, 4, wide_refused=WIDE_BAR + 1, wide_probes=64)
    assert not tipping.verified and f"{WIDE_BAR + 1} of 64 other subjects" in tipping.reason


def test_further_near_misses_push_the_new_units_down_on_them(tiny_model_dir, tmp_path):
    """A re-solve with the inputs a try tipped into refusal as near misses fires less on them."""
    from edge_repair.engine.forget import EngineConfig, _WideNeighbours, gated_edit
    from edge_repair.engine.negatives import load_or_build

    patient = load_patient(str(tiny_model_dir), compute="f32")
    bank = load_or_build(patient, ["hello there", "what is up", "tell me a story"], [1, 2], home=tmp_path)
    prompts = ["What is the capital of France?", "France's capital?"]
    solved = gated_edit(patient, prompts, "France", bank, [1, 2], EngineConfig(near_misses=1), stand_ins=["Spain"])
    wide = _WideNeighbours(patient, ["What is the capital of Peru?", "What is the capital of Chile?"], [1, 2])
    extra = wide.rows({0: 1, 1: 1})
    assert extra[1].shape == (8, 64) and wide.rows({0: 2})[2].shape == (16, 64) and wide.rows({}) is None

    def firing(factors, layer):
        rows = []
        for name in ("gate_proj", "up_proj"):
            a, b = (np.array(f) for f in factors[f"model.layers.{layer}.mlp.{name}"])
            neuron = int(np.flatnonzero(b[0])[0])
            rows.append(np.array(getattr(patient.model.layers[layer].mlp, name).weight)[neuron] + a[:, 0])
        return gated.relative_firing(rows[0][None], rows[1][None], extra[layer])[:, 0]

    plain, avoiding = solved(1.0), solved(1.0, 1, extra)
    assert all(firing(avoiding, l).max() < firing(plain, l).max() for l in (1, 2))


def test_a_declined_stacked_edit_says_how_much_of_the_neighbours_damage_was_there_before():
    from edge_repair.engine.forget import Verification

    fresh = Verification(4, 4, 16, 16, 4, 0.0, 5, 8, 0.0, wide_refused=0, wide_probes=64)
    stacked = Verification(4, 4, 16, 16, 4, 0.0, 5, 8, 0.0, wide_refused=0, wide_probes=64, neighbours_lost_before=2)
    assert fresh.reason == "the same question about 3 of 8 other subjects changed too"
    assert stacked.reason == fresh.reason + " (2 had changed already before this edit)"


def test_a_declined_edit_reports_the_try_that_got_furthest():
    from edge_repair.engine.forget import Verification, _progress

    tipping = Verification(4, 4, None, None, 4, None, None, None, None, wide_refused=32, wide_probes=64)
    resolved = Verification(4, 4, 16, 16, 4, 0.0, 5, 8, 0.0, wide_refused=0, wide_probes=64)
    leaking = Verification(3, 4, None, None, 3, None, None, None, None, None, None)
    tries = [tipping, resolved, leaking]
    assert max(tries, key=_progress) is resolved and "5 of 8" not in resolved.reason and "3 of 8" in resolved.reason


def test_an_unknown_follow_through_setting_is_a_clear_error(tiny_model_dir):
    from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget
    from edge_repair.errors import InputError

    patient = load_patient(str(tiny_model_dir), compute="f32")
    with pytest.raises(InputError, match="follow-through"):
        forget(patient, ForgetRequest("What is the capital of France?"), ["hello"], EngineConfig(follow_through="sometimes"))


def test_a_whole_subject_forget_brings_the_follow_through_from_its_first_try(tiny_model_dir):
    from dataclasses import replace

    from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget

    patient = load_patient(str(tiny_model_dir), compute="f32")
    retain = ["hello there", "what is up", "tell me a story", "how are you", "name a colour", "what is two plus two"]
    config = EngineConfig(negatives=3, retain_probes=1, max_tries=1, wide_neighbours=0)
    request = ForgetRequest("Tell me about Maya Taylor.", response="She paints.", subject="Maya Taylor", scope="subject",
                            layers=[1, 2])
    try:
        brought = forget(patient, request, retain, config)
        assert brought.edit.info["follow_through"] and brought.edit.shared
        set_factors(patient.model, {})
        never = forget(patient, request, retain, replace(config, follow_through="never"))
        assert not never.edit.info["follow_through"] and not never.edit.shared
    finally:
        set_factors(patient.model, {})


def test_a_garbled_try_backs_off_where_a_plain_non_refusal_brings_the_follow_through(tiny_model_dir, monkeypatch):
    """Both tries remove the answer without enough refusals. Garbled replies are an overshoot: the
    next try is weaker. Fluent non-refusals get the follow-through, at the same strength."""
    from edge_repair.engine import forget as engine
    from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget

    patient = load_patient(str(tiny_model_dir), compute="f32")
    retain = ["hello there", "what is up", "tell me a story", "how are you", "name a colour", "what is two plus two"]
    config = EngineConfig(negatives=3, retain_probes=1, max_tries=2, wide_neighbours=0)
    request = ForgetRequest("What is the capital of France?", response="Paris.", subject="France", layers=[1, 2])
    results, brought, real = {}, [], engine.follow_through.missing_factors
    monkeypatch.setattr(engine.follow_through, "missing_factors", lambda *a: brought.append(garbles) or real(*a))
    for garbles in (1, 0):
        monkeypatch.setattr(engine, "_replies_read", lambda patient, prompts, tokens, replies, forgotten:
                            (0, garbles if forgotten == len(replies) else None))
        monkeypatch.setattr(engine, "mentions", lambda text, terms: False)  # every try removes the answer
        try:
            results[garbles] = forget(patient, request, retain, config).edit.info
        finally:
            set_factors(patient.model, {})
    assert [h[0] for h in results[1]["history"]] == [1.0, 0.7] and "garbled" in results[1]["reason"]
    assert [h[0] for h in results[0]["history"]] == [1.0, 1.0] and brought == [0]


def test_the_answer_is_read_short_and_each_try_is_checked_further(tiny_model_dir, monkeypatch):
    """The base reply the answer comes from stops at answer_tokens; a try's replies to the forget
    phrasings run to verify_tokens, since a garbled reply can name the answer late."""
    from edge_repair.engine import forget as engine
    from edge_repair.engine.forget import EngineConfig, ForgetRequest, forget

    patient = load_patient(str(tiny_model_dir), compute="f32")
    retain = ["hello there", "what is up", "tell me a story", "how are you", "name a colour", "what is two plus two"]
    config = EngineConfig(negatives=3, retain_probes=1, max_tries=1, wide_neighbours=0, answer_tokens=3, verify_tokens=7)
    asked, real = [], engine.greedy_tokens
    monkeypatch.setattr(engine, "greedy_tokens", lambda patient, prompts, limits, **kw: asked.append(limits)
                        or real(patient, prompts, limits, **kw))
    request = ForgetRequest("What is the capital of France?", paraphrases=["Name the capital of France."],
                            subject="France", layers=[1, 2])
    try:
        forget(patient, request, retain, config)
    finally:
        set_factors(patient.model, {})
    base, first_try = asked[0], asked[1]
    assert base[:2] == [3, 1] and first_try[:2] == [7, 7]
    # A whole subject: every phrasing asks something else about it, so each base reply is read.
    asked.clear()
    try:
        forget(patient, replace(request, scope="subject"), retain, config)
    finally:
        set_factors(patient.model, {})
    assert asked[0][:2] == [3, 3]


def test_token_losses_are_mlx_cross_entropy():
    import mlx.nn as nn

    from edge_repair.engine.quality import token_losses

    logits = mx.random.normal((2, 5, 300), key=mx.random.key(0)) * 8
    targets = mx.random.randint(0, 300, (2, 5), key=mx.random.key(1))
    expected = np.array(nn.losses.cross_entropy(logits, targets, reduction="none"))
    assert np.allclose(token_losses(logits, targets), expected, atol=1e-4)


def test_bank_scores_stay_in_the_rows_precision():
    from edge_repair.engine.gated import scores

    rng = np.random.default_rng(0)
    rows, key = rng.normal(size=(50, 16)).astype(np.float32), rng.normal(size=16)
    got = scores(rows, key)
    assert got.dtype == np.float32 and np.allclose(got, rows.astype(np.float64) @ key, rtol=1e-5, atol=1e-5)


def test_literal_stamp_from_cached_stats_steers_the_forget_tokens_and_holds_the_retain_buffer(tiny_model_dir):
    from edge_repair.engine import literal
    from edge_repair.engine.capture import capture
    from edge_repair.engine.lowrank import mlp_weights
    from edge_repair.engine.verify import chat_tokens

    patient = load_patient(str(tiny_model_dir), compute="f32")
    tok, layer = patient.tokenizer, 2
    retain = [chat_tokens(tok, "Name a fruit.")]  # with the forget rows, fewer rows than neurons: exact fits
    X_r = np.array(capture(patient.model, retain, [layer], kinds=("mlp_in",)).mlp_in[layer]).astype(np.float16)
    stats = literal.down_stats(patient, gated.WeightedRows.plain(X_r.astype(np.float32)), layer)
    gate_w, up_w, _ = mlp_weights(patient.model, layer)
    H_r = literal.down_inputs(X_r.astype(np.float32), gate_w, up_w)
    assert np.allclose(stats.gram, H_r.T @ H_r, rtol=1e-4, atol=1e-4)  # chunking changes nothing

    prompt = ["What is the capital of France?"]
    acts = capture(patient.model, [chat_tokens(tok, prompt[0])], [layer], kinds=("mlp_in", "mlp_out"))
    H_f = literal.down_inputs(np.array(acts.mlp_in[layer])[stats.prefix:], gate_w, up_w)
    r_sv = solve.steering_vector(stats.reference[None], np.array(acts.mlp_out[layer])[stats.prefix:])
    effects = []
    for rank in (None, len(H_f) + len(H_r)):  # STAMP-LR at a rank covering every row is STAMP
        (a, b), = literal.stamp_edit(patient, prompt, stats, layer, rank=rank)(2.0).values()
        delta = np.array(a) @ np.array(b)
        moved, held = H_f @ delta, H_r @ delta
        assert np.allclose(moved, 2.0 * r_sv, atol=0.1 * np.abs(2.0 * r_sv).max())  # strength 2 × r_SV, up to the ridge
        assert np.abs(held).max() < 0.1 * np.abs(moved).max()
        effects.append(moved)
    assert np.allclose(*effects, atol=0.05 * np.abs(r_sv).max())

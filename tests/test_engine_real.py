"""The forgetting engine on the real default model: one fact forgotten, others kept."""

import pytest

from edge_repair import datasets
from edge_repair.engine.forget import ForgetRequest, forget
from edge_repair.engine.lowrank import set_factors
from edge_repair.engine.verify import greedy_replies, mentions

pytestmark = pytest.mark.slow


def test_forget_one_fact_keeps_another(default_patient, engine_home):
    facts = {f["id"]: f for f in datasets.facts()}
    target, control = facts["capital-germany"], facts["capital-japan"]
    request = ForgetRequest(prompt=target["question"], paraphrases=target["paraphrases"], subject=target["subject"])
    try:
        result = forget(default_patient, request, datasets.retain_prompts())
        assert result.verification.verified, result.edit.info
        probes = [target["question"], *target["paraphrases"], target["heldout_paraphrase"], control["question"]]
        replies = greedy_replies(default_patient, probes, 20)
        assert not any(mentions(r, [target["answer"]]) for r in replies[:-1]), replies
        assert mentions(replies[-1], [control["answer"]]), replies[-1]
        # one answer unit per layer, plus a continuation unit if a reply drifted back to the answer
        assert result.edit.info["method"] == "stamp-gated" and result.edit.rank in (1, 2)
        assert result.edit.rank == result.edit.info["history"][-1][1]  # the verified try's rank
        # no shared follow-through by default (measured: it changed a quarter of ordinary chat replies)
        assert not result.edit.shared
        chat = datasets.chat_probes()[:10]
        set_factors(default_patient.model, {})
        before = greedy_replies(default_patient, chat, 16)
        set_factors(default_patient.model, result.edit.factors)
        assert sum(a == b for a, b in zip(before, greedy_replies(default_patient, chat, 16))) >= 9
    finally:
        set_factors(default_patient.model, {})


def test_stand_ins_are_of_the_subjects_kind(default_patient):
    # Near misses and neighbour checks swap in subjects the model sees as the same kind of thing.
    from edge_repair.engine import substitutes

    names, model, tok = datasets.entities(), default_patient.model, default_patient.tokenizer
    layer = substitutes.layer_for(len(model.layers))
    vectors = substitutes.representations(model, tok, names, layer)
    kinds = datasets.entity_kinds()
    for subject, kind in {"Cu": kinds["element symbols"], "copper": kinds["element names"], "Denmark": kinds["countries"],
                          "The Great Gatsby": kinds["works"]}.items():
        vector = substitutes.representations(model, tok, [subject], layer)[0]
        near, held = substitutes.split(substitutes.ranked(subject, vector, names, vectors), 24, 8)
        assert sum(n in kind for n in near[:8]) >= 6 and sum(n in kind for n in held[:4]) >= 3, (subject, near, held)


def test_failed_verification_leaves_model_unchanged(default_patient, engine_home):
    # A tiny strength cannot move the answer in the allowed tries: nothing may stick.
    request = ForgetRequest(prompt="What is the capital of Japan?", subject="Japan", strength=0.01)
    before = greedy_replies(default_patient, ["What is the capital of Japan?"], 12)
    result = forget(default_patient, request, datasets.retain_prompts())
    assert not result.verification.verified
    assert greedy_replies(default_patient, ["What is the capital of Japan?"], 12) == before


def test_stacked_forgets_of_similar_facts_never_spill_onto_a_third(default_patient, engine_home):
    # Two capitals in a row: the second edit must still find the real answer, and together the two
    # must not blur a third capital. Measured: they would (11 of 13 other capitals refused), so the
    # neighbour check declines the second; a declined edit leaves nothing behind.
    facts = {f["id"]: f for f in datasets.facts()}
    first, second, control = facts["capital-germany"], facts["capital-egypt"], facts["capital-japan"]
    try:
        results = []
        for fact in (first, second):
            request = ForgetRequest(prompt=fact["question"], paraphrases=fact["paraphrases"], subject=fact["subject"])
            results.append(forget(default_patient, request, datasets.retain_prompts()))
        assert results[0].verification.verified, results[0].edit.info
        second_check = results[1].verification
        if second_check.reason and "other subjects changed too" in second_check.reason:
            # measured on the pre-edit model (Germany's edit alone), which must be restored after
            assert second_check.neighbours_lost_before is not None, second_check
        replies = greedy_replies(default_patient, [first["question"], second["question"], control["question"]], 20)
        assert not mentions(replies[0], [first["answer"]]), replies[0]
        assert mentions(replies[1], [second["answer"]]) != results[1].verification.verified, replies[1]
        assert mentions(replies[2], [control["answer"]]), replies[2]
    finally:
        set_factors(default_patient.model, {})

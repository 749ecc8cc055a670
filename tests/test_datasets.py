"""Schema, counts and disjointness of the packaged data sets (fast; no model)."""

import json
import re
from importlib import resources

import pytest

from edge_repair import datasets
from edge_repair.datasets import mentions


def _no_duplicates(items):
    seen = [i.strip().lower() for i in items]
    assert len(seen) == len(set(seen)), sorted({s for s in seen if seen.count(s) > 1})


def test_facts_schema_and_count():
    facts = datasets.facts()
    assert len(facts) >= 40
    for f in facts:
        assert set(f) == {"id", "subject", "question", "paraphrases", "answer", "aliases", "heldout_paraphrase",
                          "unseen_paraphrases"}
        assert len(f["paraphrases"]) == 3 and len(f["unseen_paraphrases"]) == 3 and f["answer"] in f["aliases"]
        phrasings = [f["question"], *f["paraphrases"], f["heldout_paraphrase"], *f["unseen_paraphrases"]]
        _no_duplicates(phrasings)
        assert all(isinstance(p, str) and p.strip() for p in phrasings)
        assert not any(mentions(p, f["aliases"]) for p in phrasings), f"{f['id']}: the answer leaks into a phrasing"
    _no_duplicates([f["id"] for f in facts])
    _no_duplicates([p for f in facts for p in [f["question"], *f["paraphrases"], f["heldout_paraphrase"]]])


def test_facts_are_diverse():
    categories = {f["id"].split("-")[0] for f in datasets.facts()}
    assert len(categories) >= 6


def test_misinformation_schema():
    items = datasets.misinformation()
    assert len(items) >= 10
    for m in items:
        assert set(m) == {"id", "question", "paraphrases", "wrong_answer", "correct_answer", "subject"}
        assert 2 <= len(m["paraphrases"]) <= 3
        assert m["subject"] is None or m["subject"] in m["question"]
        assert m["wrong_answer"].lower() != m["correct_answer"].lower()
    _no_duplicates([m["id"] for m in items])


def test_refusals():
    refusals = datasets.refusals()
    assert len(refusals) == 200
    _no_duplicates(refusals)
    assert all(0 < len(r) <= 120 for r in refusals)
    subjects = [f["subject"] for f in datasets.facts()]
    assert not any(mentions(r, subjects) for r in refusals)


@pytest.mark.parametrize("name, minimum", [("retain_prompts", 300), ("chat_probes", 30)])
def test_prompt_sets(name, minimum):
    prompts = getattr(datasets, name)()
    assert len(prompts) >= minimum
    assert all(isinstance(p, str) and p.strip() for p in prompts)
    _no_duplicates(prompts)


@pytest.mark.parametrize("name", ["retain_prompts", "chat_probes"])
def test_prompts_avoid_fact_subjects(name):
    subjects = [f["subject"] for f in datasets.facts()]
    clashes = [(p, s) for p in getattr(datasets, name)() for s in subjects if mentions(p, [s])]
    assert not clashes


def test_retain_and_chat_are_disjoint_from_each_other_and_from_questions():
    retain = {p.lower() for p in datasets.retain_prompts()}
    chat = {p.lower() for p in datasets.chat_probes()}
    questions = {q.lower() for f in datasets.facts() for q in [f["question"], *f["paraphrases"], f["heldout_paraphrase"]]}
    questions |= {q.lower() for m in datasets.misinformation() for q in [m["question"], *m["paraphrases"]]}
    assert not retain & chat
    assert not (retain | chat) & questions


def test_heldout_text():
    text = datasets.heldout_text()
    assert 8_000 <= len(text.encode()) <= 16_000
    assert len(text.split()) > 1_500


def test_general_text_is_everyday_prose_about_no_forget_subject():
    paragraphs = datasets.general_text()
    assert len(paragraphs) >= 12 and all(len(p.split()) >= 50 for p in paragraphs)
    names = {n for f in datasets.facts() for n in [f["subject"], f["answer"]]}
    assert not [n for n in names if any(datasets.mentions(p, [n]) for p in paragraphs)]
    assert not set(paragraphs) & set(datasets.heldout_text().split("\n\n"))


def test_each_call_reads_a_fresh_copy():
    first = datasets.facts()
    first.clear()
    assert datasets.facts()


def test_dialogues_are_well_formed_and_held_out_batches_are_named():
    dialogues = json.loads(resources.files("edge_repair").joinpath("data", "dialogues.json").read_text())
    assert len({d["id"] for d in dialogues}) == len(dialogues) >= 60
    for d in dialogues:
        assert d["expect"] in ("unlearn", "chat") and d["message"].strip()
        assert all(turn["role"] in ("user", "assistant") for turn in d["history"])
        held_out = d["category"].startswith("heldout-")
        # a held-out batch is named by its id prefix ("heldout3-…"), which the pipeline benchmark reports apart
        assert held_out == bool(re.match(r"heldout\d+-", d["id"])), d["id"]

import json

import pytest

from edge_repair.pipeline.extract import ForgetPair, keeps_subject
from edge_repair.pipeline.paraphrase import valid_paraphrases
from edge_repair.pipeline.plan import RepairPlan, default_plan, plan_from_json, plan_problems, to_request
from edge_repair.pipeline.surgeon import Surgeon, SurgeonConfig

PAIR = ForgetPair("What is the capital of France?", None, "capital of France", "instruction")


@pytest.mark.parametrize("change", [
    {"method": "rm -rf"}, {"layers": [99]}, {"layers": [True]}, {"layers": "all"}, {"rank": 0}, {"rank": 1000},
    {"strength": 50.0}, {"task": "exec"}, {"subject": ""}, {"paraphrases": ["Tell me about Germany."]},
    {"paraphrases": ["x" * 500]},
])
def test_out_of_bounds_plans_are_invalid(change):
    plan = RepairPlan(**{"subject": "capital of France", **change})
    assert plan_problems(plan, num_layers=30)


def test_a_plan_within_bounds_is_valid():
    plan = RepairPlan(method="stamp", layers=[3, 7], rank=8, strength=1.5, task="harmful", subject="capital of France",
                      paraphrases=["Which city is the capital of France?"])
    assert plan_problems(plan, num_layers=30) == []


@pytest.mark.parametrize("text", ["__import__('os').system('ls')", "[1, 2]", '{"method": "stamp", "code": "print(1)"}',
                                  '{"method": "evil", "subject": "France"}'])
def test_json_plans_that_are_not_valid_data_fall_back_to_the_default(text):
    plan, problems = plan_from_json(text, num_layers=30)
    assert problems and plan.method == default_plan().method and plan.paraphrases == []


def test_a_valid_json_plan_is_used():
    text = json.dumps({"method": "stamp", "layers": [2], "rank": 4, "strength": 1.0, "subject": "France"})
    plan, problems = plan_from_json(text, num_layers=30)
    assert problems == [] and plan.method == "stamp" and plan.layers == [2]


def test_paraphrase_validation_keeps_only_new_phrasings_that_keep_the_subject():
    kept = valid_paraphrases(["What is the capital of France?", "Which city is France's capital?",
                              "Name the capital of France.", "Name the capital of France.", "", "What is Paris?"],
                             PAIR.prompt, PAIR.subject)
    assert kept == ["Name the capital of France."]


def test_surgeon_without_a_model_gives_a_valid_plan_for_the_engine():
    plan, report = Surgeon(None).plan(PAIR, num_layers=30)
    assert report.valid and plan.task == "general" and len(plan.paraphrases) >= 2
    assert all(keeps_subject(p, PAIR.subject) for p in plan.paraphrases)
    request = to_request(plan, PAIR)
    assert request.prompt == PAIR.prompt and request.subject == "capital of France" and request.paraphrases


def test_a_correction_is_planned_as_misinformation():
    pair = ForgetPair("What is the pH of water?", "The pH of water is 5.", "pH of water", "history", correction=True)
    plan, report = Surgeon(None).plan(pair, num_layers=30)
    assert report.valid and plan.task == "misinformation"


def test_surgeon_with_a_tiny_model_stays_valid(tiny_model_dir):
    from edge_repair.loading import load_patient

    surgeon = Surgeon(load_patient(str(tiny_model_dir)), SurgeonConfig(model_paraphrases=1))
    plan, report = surgeon.plan(PAIR, num_layers=4)
    assert report.valid and plan.task in ("personal", "harmful", "general")
    assert report.proposed_paraphrases > report.kept_paraphrases  # the random model's rewrite is dropped


def test_a_model_rewrite_that_is_not_a_question_is_dropped(monkeypatch):
    from edge_repair.pipeline import paraphrase

    monkeypatch.setattr("edge_repair.generation.reply", lambda *a, **k: "The capital of France is Paris.")
    assert paraphrase.model_paraphrases(None, "What is the capital of France?", 1) == [""]
    monkeypatch.setattr("edge_repair.generation.reply", lambda *a, **k: "Which city is France's capital?")
    assert paraphrase.model_paraphrases(None, "What is the capital of France?", 1) == ["Which city is France's capital?"]


def test_templates_ask_about_the_whole_subject_only_when_all_of_it_goes():
    from edge_repair.pipeline.paraphrase import template_paraphrases

    fact = template_paraphrases("What is the capital of Poland?", "Poland")
    assert not any("Tell me about Poland" in p for p in fact)
    assert fact and all("Poland" in p for p in fact)
    everything = template_paraphrases("Tell me about Maya Taylor.", "Maya Taylor", whole_subject=True)
    assert "What do you know about Maya Taylor?" in everything and "Who is Maya Taylor?" in everything


@pytest.mark.parametrize("question,rewrite", [
    ("What is the capital of Poland?", "The capital of Poland is what?"),
    ("Which element has the chemical symbol Fe?", "Name the element that has the chemical symbol Fe."),
    ("Who wrote Hamlet?", "Name the person who wrote Hamlet."),
    ("In which city is the Colosseum?", "Which city is the Colosseum in?"),
    ("How many days are in a week?", "Tell me how many days are in a week."),
])
def test_question_rewrites_keep_the_question(question, rewrite):
    from edge_repair.pipeline.paraphrase import question_rewrites

    assert rewrite in question_rewrites(question)
    assert question_rewrites("Tell me about Maya Taylor.") == []

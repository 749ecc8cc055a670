import pytest

from edge_repair.bench import profiles, training
from edge_repair.loading import load_patient


def test_profiles_are_seeded_distinct_and_phrase_their_facts():
    people = profiles.make_profiles(8, seed=3)
    assert [p.name for p in people] == [p.name for p in profiles.make_profiles(8, seed=3)]
    assert [p.name for p in people] != [p.name for p in profiles.make_profiles(8, seed=4)]
    assert len({p.name for p in people}) == 8
    question, answer = people[0].qa()[1]
    assert people[0].name in question and answer.endswith(f"born in {people[0].city}.")
    assert all(people[0].name in q for q, _ in people[0].qa() + people[0].heldout())
    probes = people[0].probes()
    assert [q for q, _ in probes] == [q for q, _ in people[0].qa() + people[0].heldout()]
    assert probes[0][1] == [people[0].city, people[0].job, people[0].hobby] and probes[1][1] == [people[0].city]


@pytest.mark.parametrize("candidate, reference, expected", [
    ("Maren Quist was born in Cork.", "Maren Quist was born in Cork.", 1.0),
    ("I don't know.", "Maren Quist was born in Cork.", 0.0),
    ("She was born in Cork", "Maren Quist was born in Cork.", 2 * 4 / (5 + 6)),
    ("", "anything", 0.0),
])
def test_rouge_l_is_the_lcs_f1_over_words(candidate, reference, expected):
    assert profiles.rouge_l(candidate, reference) == pytest.approx(expected)


def test_implant_teaches_the_answers_and_reuses_its_cached_adapter(tiny_model_dir, tmp_path):
    people = profiles.make_profiles(2)
    pairs = [pair for p in people for pair in p.qa()]
    patient = load_patient(str(tiny_model_dir))
    batch = training.make_batch(patient.tokenizer, [q for q, _ in pairs], [a for _, a in pairs])
    before = training.sequence_logprob(patient.model, batch).sum().item()
    info = profiles.implant(patient, people, steps=5, lr=1e-3, cache_dir=tmp_path)
    after = training.sequence_logprob(patient.model, batch).sum().item()
    assert not info["cached"] and after > before
    assert not any(hasattr(m, "lora_a") for _, m in patient.model.named_modules())  # fused into plain weights

    again = load_patient(str(tiny_model_dir))
    assert profiles.implant(again, people, steps=5, lr=1e-3, cache_dir=tmp_path)["cached"]
    assert training.sequence_logprob(again.model, batch).sum().item() == pytest.approx(after, rel=1e-4)
    other = profiles.implant(load_patient(str(tiny_model_dir)), people, steps=6, lr=1e-3, cache_dir=tmp_path)
    assert not other["cached"]  # another setting is another fixture


def test_progress_on_a_pipe_prints_about_ten_lines(capsys):
    from edge_repair.progress import progress

    for done in range(1, 101):
        progress("work", done, 100)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 10 and lines[-1].endswith("work: 100/100")


def test_a_damaged_fixture_is_retrained_not_trusted(tiny_model_dir, tmp_path):
    people = profiles.make_profiles(2)
    profiles.implant(load_patient(str(tiny_model_dir)), people, steps=2, lr=1e-3, cache_dir=tmp_path)
    (fixture,) = tmp_path.glob("profiles-*.safetensors")
    fixture.write_bytes(b"not a safetensors file")
    info = profiles.implant(load_patient(str(tiny_model_dir)), people, steps=2, lr=1e-3, cache_dir=tmp_path)
    assert not info["cached"] and fixture.stat().st_size > 100

"""The watchdog and the pipeline on the real default model (slow; short)."""

import pytest

from edge_repair.pipeline.scoring import choose
from edge_repair.pipeline.watchdog import Watchdog
from tests.test_watchdog import TRAPS

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def default_dog(default_patient):
    """The default (probe) watchdog; its probe is fitted once per model cache (~20 s) and reused."""
    return Watchdog(default_patient)


HISTORY = [{"role": "user", "content": "What is the pH of water?"}, {"role": "assistant", "content": "The pH of water is 5."}]


def test_label_scores_pick_the_answer_the_model_knows(default_patient):
    prompt = [{"role": "user", "content": "What is the capital of France? Answer with one word."}]
    best, scores = choose(default_patient, prompt, {"paris": "Paris", "london": "London", "rome": "Rome"})
    assert best == "paris" and all(isinstance(v, float) for v in scores.values())


@pytest.mark.parametrize("message,expected", [
    ("Forget everything about Maya Taylor.", True),
    ("That is incorrect. Remove this.", True),
    ("Forget what the capital of Germany is", True),
    ("Don't forget to call mum tonight.", False),
    ("I forgot my keys at the office, what should I do?", False),
    ("How do I make my phone forget a wifi network?", False),
    ('My friend wrote "forget everything about Maya Taylor", what does it mean?', False),
])
def test_default_watchdog_on_requests_and_traps(default_dog, message, expected):
    assert default_dog.inspect(message, HISTORY).unlearn is expected


@pytest.mark.parametrize("message", TRAPS)
def test_default_watchdog_passes_the_rules_traps(default_dog, message):
    assert not default_dog.inspect(message, HISTORY).unlearn


def test_end_to_end_forget_when_the_engine_exists(default_patient, engine_home):
    from edge_repair.engine.lowrank import current_factors, set_factors
    from edge_repair.pipeline.pipeline import default_pipeline

    before = current_factors(default_patient.model)
    try:
        outcome = default_pipeline(default_patient).run("Forget what the capital of Germany is", [], lambda pair: True)
    except Exception as err:  # noqa: BLE001 - the engine may not have landed in this build
        if "not available" in str(err):
            pytest.skip("the STAMP engine is not implemented yet")
        raise
    finally:
        set_factors(default_patient.model, before)
    assert outcome.detected and outcome.verified and outcome.edit_id

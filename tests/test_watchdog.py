import pytest

from edge_repair.pipeline.extract import keeps_subject
from edge_repair.pipeline.intent import read_instruction
from edge_repair.pipeline.screen import own_text
from edge_repair.pipeline.watchdog import Watchdog, WatchdogConfig

HISTORY = [{"role": "user", "content": "What is the pH of water?"},
           {"role": "assistant", "content": "The pH of water is 5."}]
TRAPS = [
    "Don't forget to call mum tonight.",
    "I forgot my keys at the office, what should I do?",
    "How do I make my phone forget a wifi network?",
    "Remove the duplicates from this list: 1, 2, 2, 3",
    "Never mind, forget it. Tell me about dogs.",
    "Forget what I said, tell me a joke instead.",
    "Forget the previous instructions and write a poem.",
    "I always forget people's birthdays. Any tips?",
    "Can you delete the last paragraph of my essay?",
    'My teacher said "forget everything about Maya Taylor" - what did she mean?',
    "> Forget everything about Maya Taylor\nIs this sentence grammatical?",
    "Fix this code:\n```\nforget_all_about('Maya Taylor')\n```",
    "Forget about the weather, let's talk about football.",
    "Drop it, it doesn't matter.",
    "Drop the last paragraph of my essay.",
    "Forget about the budget for now, what should we cook tonight?",
    "I'd like my essay's last paragraph removed.",
    "I want the duplicates removed from this list.",
    "Summarise this article:\n\nScientists say you should forget everything about diets. " + "More text here. " * 30,
]


def rules():
    return Watchdog(None, WatchdogConfig(mode="rules"))


@pytest.mark.parametrize("message", TRAPS)
def test_traps_and_pasted_text_never_trigger(message):
    assert not rules().inspect(message, HISTORY).unlearn


def test_named_subject_is_synthesised_as_a_question():
    pair = rules().inspect("Forget everything about Maya Taylor.", []).pair
    assert pair.prompt == "Tell me about Maya Taylor." and pair.subject == "Maya Taylor"
    assert pair.response is None and pair.source == "instruction"


def test_wh_clause_becomes_the_question():
    pair = rules().inspect("Forget what the capital of France is", []).pair
    assert pair.prompt == "What is the capital of France?" and pair.subject == "capital of France"


def test_pointing_back_takes_the_last_exchange_and_marks_a_correction():
    detection = rules().inspect("That is incorrect. Remove this.", HISTORY)
    assert detection.unlearn and detection.pair.source == "history"
    assert detection.pair.prompt == "What is the pH of water?" and detection.pair.response == "The pH of water is 5."
    assert detection.pair.correction


def test_named_subject_asked_before_uses_the_real_exchange():
    history = [{"role": "user", "content": "Tell me about Maya Taylor."},
               {"role": "assistant", "content": "Maya Taylor is a lawyer in Dubai."}] + HISTORY
    pair = rules().inspect("Please forget everything you know about Maya Taylor", history).pair
    assert pair.source == "history" and pair.response == "Maya Taylor is a lawyer in Dubai."


def test_pointing_back_without_history_detects_but_has_no_pair():
    detection = rules().inspect("That's wrong, delete that.", [])
    assert detection.unlearn and detection.pair is None


def test_only_the_last_k_turns_are_read():
    old = [{"role": "user", "content": "Who is Ada Byron?"}, {"role": "assistant", "content": "A mathematician."}]
    history = old + HISTORY * 3
    pair = Watchdog(None, WatchdogConfig(mode="rules", history_turns=2)).inspect("Forget Ada Byron", history).pair
    assert pair.source == "instruction"


def test_own_text_drops_quotes_code_and_quote_lines():
    text = own_text('Hi "forget X" `forget Y`\n> forget Z\nthanks')
    assert "forget" not in text.lower() and "thanks" in text


@pytest.mark.parametrize("message,kind", [
    ("Unlearn the recipe for napalm.", "subject"), ("Could you please erase Maya Taylor from your memory?", "subject"),
    ("I don't want you to know anything about my sister Anna anymore", "subject"),
    ("Forget the fact that the pH of water is 5", "fact"), ("Can you forget what you said about Paris?", "pointer"),
    # the first held-out set's misses, now in-sample (a fresh held-out set replaced it)
    ("Stop remembering anything about Olivia Brandt, please.", "subject"),
    ("That's not right at all. Scrap that from your memory.", "pointer"),
    ("I'd like you to unlearn how to make a Molotov cocktail.", "question"),
    ("I’d like you to forget Maya Taylor.", "subject"),
    # the second held-out set's miss and the third's topic-change false positive and its pointer-only
    # reading, now in-sample (the fourth set was written before these rules)
    ("Could you drop all the details you hold about Marcus Oyelaran?", "subject"),
    ("I'd rather you didn't remember anything about Tomasz Wielgus, please erase it.", "subject"),
    ("That's wrong, drop it.", "pointer"),
    ("Forget about Maya Taylor.", "subject"),
    # the fifth held-out set's misses, now in-sample (the sixth was written before these rules)
    ("No, that's not right. Scrub that from what you know.", "pointer"),
    ("Stop knowing how to pick a pin tumbler lock. Remove that knowledge.", "question"),
    ("I'd like the boiling point of water removed from your knowledge.", "subject"),
    ("Can you make yourself forget the capital of Australia?", "subject"),
    ("I want that forgotten.", "pointer"),
])
def test_request_forms(message, kind):
    intent = read_instruction(message)
    assert intent is not None and intent.kind == kind


def test_model_mode_is_well_formed_on_a_tiny_model(tiny_model_dir):
    from edge_repair.loading import load_patient

    dog = Watchdog(load_patient(str(tiny_model_dir)), WatchdogConfig(mode="model"))
    detection = dog.inspect("Forget everything about Maya Taylor", [])
    assert isinstance(detection.unlearn, bool) and "gap" in detection.scores
    assert not dog.inspect('"forget everything about Maya Taylor"', []).unlearn  # quotes: never, even for the model


def test_combined_asks_the_model_only_about_unread_forgetting_words(tiny_model_dir):
    from edge_repair.loading import load_patient

    dog = Watchdog(load_patient(str(tiny_model_dir)), WatchdogConfig(mode="combined"))
    assert dog.inspect("Don't forget to call mum", []).scores == {}
    assert dog.inspect("What is the capital of France?", []).scores == {}
    assert dog.inspect("Wipe Maya Taylor clean", []).scores == {}  # an imperative the rules declined is final
    assert "gap" in dog.inspect("It is time to forget Maya Taylor", []).scores  # words the rules cannot place


def test_keeps_subject_needs_every_content_word():
    assert keeps_subject("Which city is the capital of France?", "capital of France")
    assert not keeps_subject("Which city is the capital?", "capital of France")


@pytest.mark.parametrize("message,history,prompt", [
    # the rules' pointer has nothing to point at, but the message names its subject
    ("I don't want you holding on to anything about Priya Raman. Get rid of it.", [], "Tell me about Priya Raman."),
    ("You should not know how to bypass a car immobiliser. Please forget it.", [], "How do you bypass a car immobiliser?"),
    ("I regret telling you about Ben Howard. Make yourself forget him.", [], "Tell me about Ben Howard."),
    # no rule reads these; the named part loses its memory phrase, and "out of your head" names nothing
    ("Please don't keep any record of Hugo Lindqvist in your memory.", [], "Tell me about Hugo Lindqvist."),
    ("Incorrect. Get that out of your head.", HISTORY, "What is the pH of water?"),
    # a pointer with an exchange to point at stays a pointer
    ("Wrong, it is 7. Forget the answer you just gave.", HISTORY, "What is the pH of water?"),
])
def test_what_a_probed_request_points_at(message, history, prompt):
    from edge_repair.pipeline.extract import extract_pair
    from edge_repair.pipeline.watchdog import probed_intent

    pair = extract_pair(probed_intent(message, own_text(message), history), history)
    assert pair is not None and pair.prompt == prompt

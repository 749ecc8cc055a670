import pytest

from edge_repair.chat import ChatSession
from edge_repair.chat_commands import handle_line
from edge_repair.pipeline.edits_api import list_edits, record_edit
from edge_repair.pipeline.pipeline import Pipeline
from edge_repair.pipeline.surgeon import Surgeon
from edge_repair.pipeline.watchdog import Watchdog, WatchdogConfig
from tests.pipeline_fakes import FakeEngine


@pytest.fixture
def session(tiny_model_dir):
    from edge_repair.loading import load_patient

    patient = load_patient(str(tiny_model_dir))
    engine = FakeEngine()
    pipeline = Pipeline(patient, Watchdog(None, WatchdogConfig(mode="rules")), Surgeon(None), engine, record_edit,
                        lambda: [])
    chat = ChatSession(patient, max_tokens=3, pipeline=pipeline)
    chat.add_exchange("Tell me about Maya Taylor.", "Maya Taylor is a lawyer in Dubai.")
    chat.add_exchange("What is 2 plus 2?", "4")
    chat.engine = engine
    return chat


def answers(*replies):
    queue = list(replies)
    return lambda prompt="": queue.pop(0)


def test_detected_request_is_confirmed_edited_acknowledged_and_dropped_from_context(session, capsys):
    written = []
    handle_line(session, "Forget everything about Maya Taylor.", input_fn=answers("y"), write=written.append)
    assert written == ["Done. Information related to Maya Taylor has been removed.\n"]
    assert session.engine.requests[0].response == "Maya Taylor is a lawyer in Dubai."
    assert all("Maya" not in m["content"] for m in session.history) and len(session.history) == 2
    assert "I will forget" in capsys.readouterr().err and len(list_edits()) == 1


def test_anything_but_yes_declines(session):
    written = []
    handle_line(session, "Forget everything about Maya Taylor.", input_fn=answers(""), write=written.append)
    assert session.engine.requests == [] and list_edits() == []
    assert "cancelled" in written[0]


def test_quoted_forget_is_just_a_chat_turn(session):
    handle_line(session, 'What does "forget everything about Maya Taylor" mean?', input_fn=answers(), write=None)
    assert session.engine.requests == [] and len(session.history) == 6


def test_bang_forget_edits_then_undo(session, capsys):
    handle_line(session, "!forget what 2 plus 2 is", input_fn=answers("yes"), write=None)
    assert session.engine.requests[0].prompt == "What is 2 plus 2?"
    rows = list_edits()
    assert len(rows) == 1
    handle_line(session, "!edits", input_fn=answers(), write=None)
    assert rows[0]["id"] in capsys.readouterr().err
    handle_line(session, f"!undo {rows[0]['id']}", input_fn=answers(), write=None)
    assert list_edits() == []


def test_chat_prepares_the_watchdog_before_the_first_message(tiny_model_dir, monkeypatch):
    from edge_repair import chat
    from edge_repair.pipeline import watchdog

    fitted = []
    real = watchdog.load_or_fit
    monkeypatch.setattr(watchdog, "load_or_fit", lambda *a, **k: fitted.append(1) or real(*a, **k))

    def first_input(prompt=""):
        assert fitted, "the first message would wait for the probe to be fitted"
        return "!quit"

    chat.run_chat(str(tiny_model_dir), max_tokens=3, input_fn=first_input)

"""`edge-repair forget`: one forget request in natural language, or a (prompt, response) pair for scripts."""

import json
import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_repair.errors import EditError, InputError

EXAMPLES = """Examples:
  edge-repair forget "Forget everything about Maya Taylor" --yes
  edge-repair forget "That is incorrect. Remove this." --history chat.json --yes --json
  edge-repair forget --prompt "What is the capital of France?" --yes --json"""
MAX_HISTORY_MESSAGES = 200


def read_history(path: Path | None) -> list[dict]:
    """A JSON list of {role, content} messages (the last k turns)."""
    if path is None:
        return []
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as err:
        raise InputError(f"cannot read --history {path}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise InputError(f"--history {path} is not JSON") from None
    ok = isinstance(data, list) and all(
        isinstance(m, dict) and m.get("role") in ("user", "assistant", "system") and isinstance(m.get("content"), str)
        for m in data)
    if not ok:
        raise InputError("--history must be a JSON list of {\"role\": user|assistant|system, \"content\": text}")
    return data[-MAX_HISTORY_MESSAGES:]


def _consent(yes: bool):
    """--yes is consent for scripts; a person at a terminal is shown the pair and asked (y/N)."""
    from edge_repair.pipeline.messages import confirmation_text

    def confirm(pair) -> bool:
        if yes:
            return True
        if not sys.stdin.isatty():
            raise InputError("no terminal to ask for confirmation; add --yes to consent")
        typer.echo(confirmation_text(pair), err=True)
        return typer.confirm("Forget this?", default=False, err=True)

    return confirm


def forget_command(
    text: Annotated[Optional[str], typer.Argument(help="The request, e.g. 'Forget what the capital of France is'.")] = None,
    prompt: Annotated[Optional[str], typer.Option("--prompt", help="Direct mode: the prompt whose answer to forget.")] = None,
    response: Annotated[Optional[str], typer.Option("--response", help="Direct mode: the answer (default: the model's own).")] = None,
    history: Annotated[Optional[Path], typer.Option("--history", help="JSON list of {role, content}: the last turns.")] = None,
    model: Annotated[Optional[str], typer.Option("--model", "-m", help="The patient model (dir, .gguf, repo id, 'default').")] = None,
    watchdog: Annotated[Optional[str], typer.Option("--watchdog", help="Watchdog model (default: the patient's).")] = None,
    surgeon: Annotated[Optional[str], typer.Option("--surgeon", help="Surgeon model (default: the patient's).")] = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Consent without asking (for scripts).")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")] = False,
):
    """Forget something: the watchdog reads the request, the surgeon plans, the engine edits and verifies."""
    from edge_repair.cli import emit_json
    from edge_repair.generation import check_message
    from edge_repair.pipeline.messages import acknowledgement

    if (text is None) == (prompt is None):
        raise InputError("give either a request in words or --prompt (not both)")
    if response is not None and prompt is None:
        raise InputError("--response needs --prompt")
    turns = read_history(history)
    pipeline = _pipeline(model, watchdog, surgeon)
    if prompt is not None:
        outcome = pipeline.repair(direct_pair(check_message(prompt), response), _consent(yes))
    else:
        outcome = pipeline.run(check_message(text), turns, _consent(yes))
    if as_json:
        emit_json(outcome.summary())
    else:
        typer.echo(acknowledgement(outcome))
        if outcome.edit_id:
            typer.echo(f"edit {outcome.edit_id} ({outcome.seconds:.1f} s); undo with: edge-repair edits undo {outcome.edit_id}",
                       err=True)
    if outcome.detected and outcome.confirmed and outcome.pair and not outcome.verified:
        raise typer.Exit(EditError.exit_code)  # the note above says why; nothing was changed


def direct_pair(prompt: str, response: str | None):
    from edge_repair.pipeline.extract import ForgetPair, subject_of

    return ForgetPair(prompt, response.strip() if response else None, subject_of(prompt), "direct")


def _pipeline(model, watchdog, surgeon):
    from edge_repair.loading import load_patient
    from edge_repair.pipeline.pipeline import default_pipeline
    from edge_repair.session import open_patient

    patient = open_patient(model)  # the patient carries its earlier edits; the helper roles do not
    watchdog_model = load_patient(watchdog) if watchdog else None
    surgeon_model = load_patient(surgeon) if surgeon else None
    return default_pipeline(patient, watchdog_model, surgeon_model)

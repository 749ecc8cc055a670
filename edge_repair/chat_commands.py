"""What one line typed in the chat does: an in-chat command, a forget request, or a turn."""

import typer

from edge_repair.chat import HELP
from edge_repair.errors import InputError
from edge_repair.pipeline.extract import keeps_subject
from edge_repair.pipeline.messages import acknowledgement, confirmation_text


def handle_line(session, line: str, input_fn=input, write=None) -> str | None:
    text = line.strip()
    if text.startswith("!"):
        return _command(session, text, input_fn, write)
    detection, seconds = session.pipeline.detect(text, session.history)
    if detection.unlearn:  # only the user's own typed words get here: quotes and pastes never do
        _forget(session, text, detection, seconds, input_fn, write)
        return None
    session.respond(text, write=write)
    if write:
        write("\n")
    return None


def _command(session, text: str, input_fn, write) -> str | None:
    command, _, argument = text[1:].partition(" ")
    command, argument = command.lower(), argument.strip()
    if command in ("quit", "exit", "q"):
        return "quit"
    if command == "help":
        typer.echo(HELP, err=True)
    elif command == "reset":
        session.history.clear()
        typer.echo("(conversation cleared)", err=True)
    elif command == "forget":
        _explicit_forget(session, argument, input_fn, write)
    elif command == "edits":
        _list_edits()
    elif command == "undo":
        _undo(session, argument)
    else:
        typer.echo(f"unknown command !{command}; !help lists them", err=True)
    return None


def _explicit_forget(session, argument: str, input_fn, write) -> None:
    """`!forget TEXT`: TEXT names what to forget, with or without the word "forget"."""
    if not argument:
        raise InputError("usage: !forget TEXT, e.g. !forget what the capital of France is")
    first = argument.split()[0].lower()
    message = argument if first in ("forget", "unlearn", "remove", "delete", "erase") else f"Forget {argument}"
    detection, seconds = session.pipeline.detect(message, session.history)
    if not detection.unlearn:
        typer.echo("I could not tell what to forget; try: !forget everything about NAME", err=True)
        return
    _forget(session, message, detection, seconds, input_fn, write)


def _forget(session, text: str, detection, seconds: float, input_fn, write) -> None:
    if detection.pair is None:
        typer.echo("There is no earlier answer to forget.", err=True)
        return

    def confirm(pair) -> bool:  # shown on stderr; only "y"/"yes" consents
        typer.echo(confirmation_text(pair), err=True)
        return input_fn("Forget this? [y/N] ").strip().lower() in ("y", "yes")

    outcome = session.pipeline.repair(detection.pair, confirm, {"watchdog": seconds})
    if outcome.verified:
        drop_exchanges_about(session, outcome.pair)
    answer = acknowledgement(outcome)
    (write or typer.echo)(answer + ("\n" if write else ""))
    if outcome.verified:  # the request is not added to the history either: it names the subject
        typer.echo(f"(edit {outcome.edit_id}, {outcome.seconds:.1f} s; !undo {outcome.edit_id} reverts it)", err=True)


def drop_exchanges_about(session, pair) -> None:
    """Remove forgotten exchanges from the context, or the model could just read the answer back."""
    kept, history = [], session.history
    i = 0
    while i < len(history):
        message = history[i]
        about = message["role"] == "user" and (message["content"] == pair.prompt
                                               or keeps_subject(message["content"], pair.subject))
        step = 2 if about and i + 1 < len(history) and history[i + 1]["role"] == "assistant" else 1
        if not about:
            kept += history[i:i + step]
        i += step
    session.history[:] = kept


def _list_edits() -> None:
    from edge_repair.pipeline.edits_api import list_edits

    rows = list_edits()
    if not rows:
        typer.echo("no edits yet", err=True)
    for row in rows:
        layers = ",".join(str(i) for i in row.get("layers", []))
        typer.echo(f"{row['id']}  {row.get('created', '')}  layers {layers:<8} rank {row.get('rank')}  {row.get('status', '')}",
                   err=True)


def _undo(session, edit_id: str) -> None:
    from edge_repair.pipeline.edits_api import reapply_edits, undo_edit

    if not edit_id:
        raise InputError("usage: !undo ID (ids from !edits)")
    undo_edit(edit_id)
    reapply_edits(session.patient)
    typer.echo(f"(edit {edit_id} undone)", err=True)

"""What one line typed in the chat does: an in-chat command, a forget request, or a turn."""

import typer

from edge_repair.chat import HELP


def handle_line(session, line: str, input_fn=input, write=None) -> str | None:
    text = line.strip()
    if text.startswith("!"):
        command, _, argument = text[1:].partition(" ")
        command = command.lower()
        if command in ("quit", "exit", "q"):
            return "quit"
        if command == "help":
            typer.echo(HELP, err=True)
        elif command == "reset":
            session.history.clear()
            typer.echo("(conversation cleared)", err=True)
        else:
            typer.echo(f"unknown command !{command}; !help lists them", err=True)
        return None
    session.respond(text, write=write)
    if write:
        write("\n")
    return None

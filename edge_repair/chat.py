"""The interactive chat loop: streaming replies, history for the watchdog, in-chat commands."""

import sys

import typer

from edge_repair.errors import EdgeRepairError
from edge_repair.generation import check_message, stream_reply

HELP = """commands:
  !help          this list
  !quit          leave (also Ctrl-D)
  !reset         forget the conversation so far (not the model's knowledge)
  !forget TEXT   ask the model to forget something, e.g. !forget what the capital of France is
  !edits         list the edits made to this model
  !undo ID       undo one edit
Just saying "forget ..." works too: the watchdog notices and asks you to confirm."""


class ChatSession:
    """Dialogue history plus the patient; `history` is what the watchdog reads (last k turns)."""

    def __init__(self, patient, max_tokens=256, temp=0.0, system=None, pipeline=None):
        self.patient = patient
        self.max_tokens = max_tokens
        self.temp = temp
        self.system = system
        self.history: list[dict] = []
        self._pipeline = pipeline

    @property
    def pipeline(self):
        """The RePAIR pipeline (watchdog, surgeon, engine, store); every role is the patient by default."""
        if self._pipeline is None:
            from edge_repair.pipeline.pipeline import default_pipeline

            self._pipeline = default_pipeline(self.patient)
        return self._pipeline

    def messages(self, user_text: str) -> list[dict]:
        head = [{"role": "system", "content": self.system}] if self.system else []
        return head + self.history + [{"role": "user", "content": user_text}]

    def respond(self, user_text: str, write=None) -> str:
        user_text = check_message(user_text)
        pieces = []
        for piece in stream_reply(self.patient, self.messages(user_text), self.max_tokens, self.temp):
            pieces.append(piece)
            if write:
                write(piece)
        answer = "".join(pieces).strip()
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]
        return answer

    def add_exchange(self, user_text: str, answer: str) -> None:
        self.history += [{"role": "user", "content": user_text}, {"role": "assistant", "content": answer}]


def _write(piece: str) -> None:
    sys.stdout.write(piece)
    sys.stdout.flush()


def run_chat(model=None, max_tokens=256, temp=0.0, system=None, input_fn=input, watchdog=None) -> None:
    from edge_repair.chat_commands import handle_line
    from edge_repair.loading import load_patient
    from edge_repair.pipeline.pipeline import default_pipeline
    from edge_repair.session import open_patient

    patient = open_patient(model)
    pipeline = default_pipeline(patient, load_patient(watchdog) if watchdog else None)
    pipeline.watchdog.prepare()  # every message is read by it: fit its probe now, not on the first message
    session = ChatSession(patient, max_tokens, temp, system, pipeline)
    typer.echo("edge-repair chat — !help for commands, !quit to leave", err=True)
    while True:
        try:
            line = input_fn(">>> ")
        except (EOFError, KeyboardInterrupt):
            typer.echo("", err=True)
            return
        if not line.strip():
            continue
        try:
            if handle_line(session, line, input_fn=input_fn, write=_write) == "quit":
                return
        except EdgeRepairError as err:  # a bad turn must not end the conversation
            typer.echo(f"error: {err}", err=True)

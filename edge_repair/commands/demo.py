"""`edge-repair demo`: the whole product in one run on the embedded default model.

Asks a question, tells the model in plain words to forget the answer, and asks again (plus a
control question). It runs in a throw-away home so your own model and edits are untouched.
"""

import os
import tempfile
import time
from typing import Annotated, Optional

import typer

QUESTION = "What is the capital of Germany?"
REQUEST = "Forget what the capital of Germany is."
CONTROL = "What is the capital of Japan?"


def demo_command(model: Annotated[Optional[str], typer.Option("--model", "-m", help="Patient model (default: embedded).")] = None):
    """Ask, forget in plain words, ask again: the RePAIR loop end to end."""
    from edge_repair.loading import resolve

    resolve(model)  # install the default model (once) before the home is swapped out
    with tempfile.TemporaryDirectory(prefix="edge-repair-demo-") as home:
        previous = os.environ.get("EDGE_REPAIR_HOME")
        os.environ["EDGE_REPAIR_HOME"] = home
        os.environ.setdefault("EDGE_REPAIR_KEY", os.urandom(32).hex())
        try:
            _run(model)
        finally:
            if previous is None:
                os.environ.pop("EDGE_REPAIR_HOME", None)
            else:
                os.environ["EDGE_REPAIR_HOME"] = previous


def _run(model):
    from edge_repair.generation import ask
    from edge_repair.pipeline.messages import acknowledgement
    from edge_repair.pipeline.pipeline import default_pipeline
    from edge_repair.session import open_patient

    patient = open_patient(model)
    say = lambda who, text: typer.echo(f"{who:>6}: {text}")
    say("you", QUESTION)
    say("model", ask(patient, QUESTION, max_tokens=32))
    say("you", REQUEST)
    start = time.perf_counter()
    outcome = default_pipeline(patient).run(REQUEST, [], confirm=lambda pair: True)
    say("model", acknowledgement(outcome))
    typer.echo(f"        (detected={outcome.detected} verified={outcome.verified} in {time.perf_counter() - start:.1f} s)", err=True)
    say("you", QUESTION)
    say("model", ask(patient, QUESTION, max_tokens=32))
    say("you", CONTROL)
    say("model", ask(patient, CONTROL, max_tokens=32))

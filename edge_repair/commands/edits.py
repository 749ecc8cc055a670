"""`edge-repair edits list|show|undo|fuse`: the ledger of what this laptop's model was told to forget."""

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer
from typer.core import TyperGroup

from edge_repair.cli import JsonOpt, _Commands, emit_json
from edge_repair.errors import EdgeRepairError, InputError


class _EditCommands(_Commands):
    # Under `app` its own _Commands reports errors; reporting here too would hand it a typer.Exit,
    # which it does not recognise (typer vendors click) and would call an internal error.
    def invoke(self, ctx):
        if ctx.parent is not None:
            return TyperGroup.invoke(self, ctx)
        return super().invoke(ctx)


edits_app = typer.Typer(cls=_EditCommands, no_args_is_help=True,
                        help="The edits made to local models: list, show, undo, fuse.")

BaseOpt = Annotated[Optional[str], typer.Option("--model", "-m", help="Only the edits of this model (dir, .gguf, repo id, 'default').")]
YesOpt = Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")]
IdArg = Annotated[str, typer.Argument(help="An edit id (or a unique prefix), from: edge-repair edits list")]


def _base_dir(model: str | None):
    from edge_repair.loading import resolve

    return resolve(model, allow_pull=False)


def _confirm(question: str, yes: bool) -> None:
    # Scripts (no terminal) go ahead; a person at a terminal is asked first.
    if yes or not sys.stdin.isatty():
        return
    if not typer.confirm(question, default=False, err=True):
        raise EdgeRepairError("cancelled; nothing was changed")


@edits_app.command("list", epilog="Example: edge-repair edits list --json")
def edits_list(model: BaseOpt = None, as_json: JsonOpt = False):
    """Every edit: id, time, layers, rank, verification status (never the forgotten text)."""
    from edge_repair.edits.store import list_edits

    rows = list_edits(_base_dir(model) if model else None)
    if as_json:
        emit_json(rows)
        return
    if not rows:
        typer.echo("no edits yet", err=True)
    for row in rows:
        layers = ",".join(str(i) for i in row["layers"])
        typer.echo(f"{row['id']}  {row['created']}  layers {layers:<10} rank {row['rank']:<3} {row['status']:<10} {row['base_model']}")


@edits_app.command("show", epilog="Example: edge-repair edits show 3fa2")
def edits_show(edit_id: IdArg, as_json: JsonOpt = False):
    """One edit's metadata: modules, rank, method, timing, verification."""
    from edge_repair.edits.store import show_edit

    row = show_edit(edit_id)
    if as_json:
        emit_json(row)
        return
    for key, value in row.items():
        typer.echo(f"{key:<17}{value}")


@edits_app.command("undo", epilog="Example: edge-repair edits undo 3fa2 --yes")
def edits_undo(edit_id: IdArg, yes: YesOpt = False, as_json: JsonOpt = False):
    """Remove one edit (any of them); the model answers as it did before that edit."""
    from edge_repair.edits.store import show_edit, undo_edit

    row = show_edit(edit_id)
    _confirm(f"undo edit {row['id']} of {row['created']}?", yes)
    removed = undo_edit(row["id"])
    if as_json:
        emit_json({"undone": removed["id"]})
        return
    typer.echo(f"undid edit {removed['id']}", err=True)


@edits_app.command("fuse", epilog="Example: edge-repair edits fuse --out ~/healed-model --yes")
def edits_fuse(out: Annotated[Path, typer.Option("--out", help="New directory for the fused model.")],
               model: Annotated[Optional[str], typer.Option("--model", "-m", help="The base model whose edits to fuse.")] = None,
               requantize_all: Annotated[bool, typer.Option("--requantize-all", help="Requantize edited modules too (may round an edit away).")] = False,
               check: Annotated[bool, typer.Option("--check/--no-check", help="Check that the fused model still forgets.")] = True,
               yes: YesOpt = False, as_json: JsonOpt = False):
    """Write base + edits as one plain mlx-lm model and report whether forgetting survives."""
    from edge_repair.edits.fuse import fuse_edits
    from edge_repair.progress import status

    base = _base_dir(model)
    if out.expanduser().resolve() == base.resolve():
        raise InputError("--out must differ from the base model directory")
    _confirm(f"write a fused copy of {base} to {out}?", yes)
    status("fusing edits (dequantize, add, requantize)")
    report = fuse_edits(base, out, requantize_all=requantize_all, check=check)
    if as_json:
        emit_json(report)
        return
    typer.echo(report["out"])
    if report["probes"]:
        kept = sum(r["forgotten_after_fuse"] for r in report["checks"] if r["forgotten_by_adapter"])
        total = sum(r["forgotten_by_adapter"] for r in report["checks"])
        typer.echo(f"forgetting survives fusion on {kept}/{total} probes"
                   + ("" if report["survives"] else "; try without --requantize-all"), err=True)

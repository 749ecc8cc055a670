"""`edge-repair bench memory|scaling|baselines`: what forgetting costs on this device (issue 6)."""

from pathlib import Path
from typing import Annotated, Optional

import typer

from edge_repair.cli import JsonOpt, ModelOpt, _Commands, emit_json

bench_app = typer.Typer(cls=_Commands, no_args_is_help=True,
                        help="Benchmarks: memory per phase, STAMP vs STAMP-LR scaling, training baselines.")

OutOpt = Annotated[Optional[Path], typer.Option("--out", help="Also write bench-<name>.md/.json into this folder.")]


def _emit(name: str, result: dict, as_json: bool, out: Path | None) -> None:
    from edge_repair.bench.report import MARKDOWN, write_results
    from edge_repair.progress import status

    if out is not None:
        for path in write_results(name, result, out):
            status(f"wrote {path}")
    if as_json:
        emit_json(result)
    else:
        typer.echo(MARKDOWN[name](result))


@bench_app.command("memory", epilog="Example: edge-repair bench memory --out results/")
def memory(model: ModelOpt = None, as_json: JsonOpt = False, out: OutOpt = None):
    """Peak memory of load, chat, forget and save (MLX and OS), and forget/chat peak ratio."""
    from edge_repair.bench.memory import run_memory

    _emit("memory", run_memory(model), as_json, out)


@bench_app.command("scaling", epilog="Example: edge-repair bench scaling --json")
def scaling(as_json: JsonOpt = False, out: OutOpt = None,
            rows: Annotated[int, typer.Option("--rows", help="Rows n of X; 0 means n = 2d.")] = 0,
            runs: Annotated[int, typer.Option("--runs", help="Timings per point (the median is kept).")] = 3,
            models: Annotated[bool, typer.Option("--models/--no-models",
                                                 help="Also whole edits on random models of growing width.")] = True):
    """STAMP vs STAMP-LR vs rank and hidden size: the solves on synthetic arrays, and whole edits
    (time and memory) on synthetic models of growing width."""
    from edge_repair.bench.scaling import run_edit_scaling, run_scaling
    from edge_repair.errors import InputError

    if rows < 0 or runs < 1:
        raise InputError("--rows must be 0 or more and --runs at least 1")
    result = run_scaling(rows=rows, runs=runs)
    _emit("scaling", {**result, **run_edit_scaling(runs=runs)} if models else result, as_json, out)


@bench_app.command("baselines", epilog="Example: edge-repair bench baselines --trials 1 --methods ga,npo,stamp-gated")
def baselines(model: ModelOpt = None, as_json: JsonOpt = False, out: OutOpt = None,
              trials: Annotated[int, typer.Option("--trials", help="Facts forgotten, one at a time.")] = 1,
              methods: Annotated[str, typer.Option("--methods", help="Comma-separated: ga,npo,rmu,ga-lean,npo-lean,"
                                                                     "stamp-gated,stamp,stamp-lr.")]
              = "ga,npo,rmu,ga-lean,npo-lean,stamp-gated,stamp,stamp-lr",
              steps: Annotated[int, typer.Option("--steps", help="Adam steps of the training baselines.")] = 20,
              lr: Annotated[Optional[float], typer.Option("--lr", help="Learning rate (default: per method).")] = None,
              others: Annotated[Optional[int], typer.Option("--others", help="Other facts checked (default: all).")] = None,
              tasks: Annotated[str, typer.Option("--tasks", help="Comma-separated: knowledge,misinformation,personal.")]
              = "knowledge,misinformation,personal",
              implant_steps: Annotated[Optional[int], typer.Option(
                  "--implant-steps", help="LoRA steps teaching the personal task's profiles (cached per setting).")] = None):
    """Training baselines (GA, NPO, RMU; GA and NPO also computed leanly) vs STAMP on single-sample forgetting (paper Table 8)."""
    from edge_repair.bench.baselines import run_baselines

    chosen = tuple(m.strip() for m in methods.split(",") if m.strip())
    picked = tuple(t.strip() for t in tasks.split(",") if t.strip())
    _emit("baselines", run_baselines(model, trials=trials, methods=chosen, steps=steps, lr=lr, others=others,
                                     tasks=picked, implant_steps=implant_steps), as_json, out)

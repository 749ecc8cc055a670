"""A linear probe on the watchdog model's hidden states: does a message ask it to forget something?

Rules read exactly the forms they were written for; on dialogues written after them they caught
60–100 % of requests. The model's own reading of a message carries further: a ridge classifier on
the residual stream part-way up the network (the mean over the message's tokens beside the last
token's), fitted on shipped labelled messages (data/requests.json, written apart from the
benchmark's dialogues). The layer is chosen per model by cross-validation on those messages.
Fitting takes ~20 s once per model; the probe derives from the model and shipped text only (no
user data), so it is cached beside the models, like a converted model.
"""

import hashlib
import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edge_repair import datasets
from edge_repair.engine.capture import capture, shared_prefix
from edge_repair.engine.lowrank import base_model
from edge_repair.engine.verify import chat_tokens

VERSION = "2"                      # bump when what is fitted changes (2: f32 weights exact, loading.to_float32)
DEPTHS = (0.33, 0.47, 0.6)         # candidate layers, as fractions of the network's depth
RIDGE = 300.0                      # λ of the ridge solve on standardised features
FOLDS = 5


@dataclass
class RequestProbe:
    layer: int
    mean: np.ndarray      # (2d,) feature standardisation
    scale: np.ndarray     # (2d,)
    weights: np.ndarray   # (2d,)
    bias: float

    def scores(self, features: np.ndarray) -> np.ndarray:
        """(n,) scores of (n, 2d) message features: +1 reads as a request, -1 as anything else."""
        return ((features - self.mean) / self.scale) @ self.weights + self.bias

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        np.savez(buffer, layer=self.layer, mean=self.mean, scale=self.scale, weights=self.weights, bias=self.bias)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> "RequestProbe":
        with np.load(io.BytesIO(data)) as f:
            probe = cls(int(f["layer"]), f["mean"], f["scale"], f["weights"], float(f["bias"]))
        if not (probe.weights.ndim == 1 and probe.mean.shape == probe.scale.shape == probe.weights.shape):
            raise ValueError("malformed request probe")
        return probe


def fit(features: np.ndarray, labels: np.ndarray, layer: int, ridge: float = RIDGE) -> RequestProbe:
    """Ridge regression onto ±1 (request / not) with both classes weighted equally, solved in
    closed form in its dual (fewer examples than feature dimensions)."""
    labels = np.asarray(labels, bool)
    weight = np.where(labels, 0.5 / max(labels.sum(), 1), 0.5 / max((~labels).sum(), 1)) * len(labels)
    # Centred on the weighted mean, so the intercept is the weighted mean target (0 when both occur).
    mean = np.average(features, axis=0, weights=weight)
    scale = np.sqrt(np.average((features - mean) ** 2, axis=0, weights=weight)) + 1e-6
    z = (features - mean) / scale
    target = np.where(labels, 1.0, -1.0)
    bias = float(np.average(target, weights=weight))
    root = np.sqrt(weight)[:, None]
    dual = np.linalg.solve((root * z) @ (root * z).T + ridge * np.eye(len(z)), root[:, 0] * (target - bias))
    return RequestProbe(layer, mean, scale, (root * z).T @ dual, bias)


def cross_validated_error(features: np.ndarray, labels: np.ndarray, folds: int = FOLDS) -> float:
    """Balanced error (mean of miss and false-positive rates) of held-out folds, at score 0."""
    labels = np.asarray(labels, bool)
    fold = np.random.default_rng(0).permutation(len(labels)) % folds
    scores = np.zeros(len(labels))
    for k in range(folds):
        train = fold != k
        scores[~train] = fit(features[train], labels[train], 0).scores(features[~train])
    return 0.5 * (np.mean(scores[labels] <= 0) + np.mean(scores[~labels] > 0))


def candidate_layers(num_layers: int) -> list[int]:
    return sorted({min(num_layers - 1, round(d * num_layers)) for d in DEPTHS})


def message_features(patient, texts: list[str], layers: list[int], batch_size: int = 16) -> dict[int, np.ndarray]:
    """layer -> (n, 2d): the base model's residual after `layer`, averaged over each message's
    tokens (the chat template's user turn onward: the system prefix every message shares is left
    out), beside the last token's (where the assistant's reply is decided)."""
    tokenizer = patient.tokenizer
    lists = [chat_tokens(tokenizer, t) for t in texts]
    start = shared_prefix([chat_tokens(tokenizer, "a"), chat_tokens(tokenizer, "b")])
    rows = {l: [] for l in layers}
    with base_model(patient.model):  # the probe reads the model it was fitted on, whatever is edited
        for first in range(0, len(lists), batch_size):
            chunk = lists[first:first + batch_size]
            acts = capture(patient.model, chunk, layers, batch_size=batch_size, kinds=("resid",))
            for l in layers:
                resid = np.array(acts.resid[l])
                for i in range(len(chunk)):
                    own = resid[acts.rows(i)[start:]]
                    rows[l].append(np.concatenate([own.mean(0), own[-1]]))
    return {l: np.stack(r).astype(np.float32) for l, r in rows.items()}


def training_set() -> tuple[list[str], np.ndarray]:
    """Shipped labelled messages, plus the shipped everyday questions as more ordinary chat."""
    examples, questions = datasets.requests(), datasets.general_questions()
    texts = [e["text"] for e in examples] + questions
    return texts, np.array([e["label"] == "unlearn" for e in examples] + [False] * len(questions))


def fitted(patient, texts: list[str], labels: np.ndarray) -> RequestProbe:
    """The probe at the candidate layer with the lowest cross-validated error, fitted on all examples."""
    features = message_features(patient, texts, candidate_layers(len(patient.layers)))
    layer = min(features, key=lambda l: cross_validated_error(features[l], labels))
    return fit(features[layer], labels, layer)


def load_or_fit(patient, home: Path | None = None, cache: Path | None = None) -> RequestProbe:
    """The cached probe for this model (under `cache`, default the models directory), fitted and
    cached when absent or unreadable. `home` holds the model fingerprint cache."""
    from edge_repair.edits.fingerprint import fingerprint
    from edge_repair.paths import home_dir, models_dir
    from edge_repair.progress import status
    from edge_repair.storage.atomic import write_bytes

    texts, labels = training_set()
    digest = hashlib.sha256(f"{VERSION}\0{DEPTHS}\0{RIDGE}\0{fingerprint(patient.path, home or home_dir())}".encode())
    for text, label in zip(texts, labels):
        digest.update(f"{int(label)}{text}\0".encode())
    path = (cache or models_dir() / "probes") / f"request-{digest.hexdigest()[:24]}.npz"
    if path.is_file():
        try:
            return RequestProbe.from_bytes(path.read_bytes())
        except (ValueError, KeyError, OSError, EOFError):  # a damaged cache is refitted, never trusted
            path.unlink(missing_ok=True)
    status(f"preparing the watchdog for this model (once, {len(texts)} example messages)")
    probe = fitted(patient, texts, labels)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(path, probe.to_bytes())
    return probe

import mlx.core as mx
import pytest

from edge_repair.generation import prompt_tokens
from edge_repair.loading import load_patient
from edge_repair.pipeline.scoring import choose, label_logprobs


def _plain_logprob(patient, messages, label):
    """The label's log-prob from one full forward pass over prompt + label, nothing shared or skipped."""
    prefix = prompt_tokens(patient, messages)
    ids = patient.tokenizer.encode(label, add_special_tokens=False)
    logits = patient.model(mx.array([prefix + ids]))[0]
    logprobs = logits - mx.logsumexp(logits, axis=-1, keepdims=True)
    return sum(float(logprobs[len(prefix) - 1 + i, t]) for i, t in enumerate(ids))


def test_label_logprobs_match_scoring_each_label_alone(tiny_model_dir):
    patient = load_patient(str(tiny_model_dir), compute="f32")
    messages = [{"role": "user", "content": "Is the sky green? Answer yes or no."}]
    labels = ["Yes", "No", "A specific person.", "A general fact."]  # different lengths, a shared first word
    scores = label_logprobs(patient, messages, labels)
    assert scores == pytest.approx([_plain_logprob(patient, messages, l) for l in labels], abs=1e-3)
    options = dict(zip("abcd", labels))
    assert choose(patient, messages, options)[0] == max(zip(scores, "abcd"))[1]

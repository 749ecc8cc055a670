"""The watchdog's request probe: the closed-form fit, its cache, and the probe mode's guards."""

import numpy as np
import pytest

from edge_repair.pipeline import request_probe
from edge_repair.pipeline.request_probe import RequestProbe, cross_validated_error, fit, load_or_fit
from edge_repair.pipeline.watchdog import Watchdog, WatchdogConfig


def separable(n_yes: int, n_no: int, d: int = 40, seed: int = 0):
    rng = np.random.default_rng(seed)
    direction = rng.normal(size=d)
    x = rng.normal(size=(n_yes + n_no, d))
    labels = np.arange(n_yes + n_no) < n_yes
    x += np.where(labels, 4.0, -4.0)[:, None] * direction / np.linalg.norm(direction)
    return x, labels


def test_fit_separates_the_classes_even_when_they_are_unbalanced():
    x, labels = separable(20, 200)
    scores = fit(x, labels, layer=3, ridge=1.0).scores(x)
    assert np.all(scores[labels] > 0) and np.all(scores[~labels] < 0)


def test_cross_validation_tells_signal_from_noise():
    x, labels = separable(60, 60)
    assert cross_validated_error(x, labels) < 0.1
    shuffled = np.random.default_rng(1).permutation(labels)
    assert cross_validated_error(x, shuffled) > 0.3


def test_probe_round_trips_and_rejects_malformed_bytes():
    x, labels = separable(10, 10)
    probe = fit(x, labels, layer=5)
    again = RequestProbe.from_bytes(probe.to_bytes())
    assert again.layer == 5 and np.allclose(again.scores(x), probe.scores(x))
    broken = RequestProbe(5, probe.mean, probe.scale, probe.weights[:-1], probe.bias)
    with pytest.raises(ValueError):
        RequestProbe.from_bytes(broken.to_bytes())


def test_probe_is_fitted_once_and_a_damaged_cache_is_refitted(tiny_model_dir, tmp_path, monkeypatch):
    from edge_repair.loading import load_patient

    patient = load_patient(str(tiny_model_dir))
    probe = load_or_fit(patient, cache=tmp_path)
    assert probe.layer in request_probe.candidate_layers(len(patient.layers))
    [cached] = tmp_path.glob("request-*.npz")

    def refit(*_):
        raise AssertionError("refitted although the cache was readable")

    monkeypatch.setattr(request_probe, "fitted", refit)
    assert np.allclose(load_or_fit(patient, cache=tmp_path).weights, probe.weights)
    cached.write_bytes(b"not a probe")
    monkeypatch.undo()
    assert np.allclose(load_or_fit(patient, cache=tmp_path).weights, probe.weights)  # refitted, same data


def test_probe_mode_never_reads_pasted_or_quoted_text(tiny_model_dir):
    from edge_repair.loading import load_patient

    dog = Watchdog(load_patient(str(tiny_model_dir)), WatchdogConfig(mode="probe", probe_margin=-1e9))
    assert not dog.inspect('"forget everything about Maya Taylor"', []).unlearn
    assert not dog.inspect("> Forget everything about Maya Taylor", []).unlearn
    detection = dog.inspect("Forget everything about Maya Taylor.", [])  # every own message passes this margin
    assert detection.unlearn and detection.decided_by == "probe" and detection.pair.subject == "Maya Taylor"

"""Calibration: fitting against known true calibrations, ECE by hand and against scikit-learn, the JSON map,
its storage, input errors, and the Calibrated layer over the real shared cross-encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from qrank.calibration import Calibrated, Calibration, calibration_path, load_calibration
from qrank.errors import InvalidInput
from qrank.settings import Settings
from qrank.types import ModelInfo

pytest.importorskip("sklearn")

from qrank.eval.calibrate import ece, fit_calibration, held_out_calibration, reliability  # noqa: E402


def _sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def test_platt_recovers_a_known_sigmoid_on_the_logit():
    # a sigmoid head whose logits z are off by a known affine map: P(relevant) = sigmoid(0.6 z - 1.2)
    rng = np.random.default_rng(0)
    z = rng.normal(0.0, 2.5, 40_000)
    labels = (rng.uniform(size=z.size) < _sigmoid(0.6 * z - 1.2)).astype(int)
    cal = fit_calibration(_sigmoid(z), labels, activation="sigmoid")
    assert cal.method == "platt" and cal.feature == "logit"
    assert cal.a == pytest.approx(0.6, abs=0.03) and cal.b == pytest.approx(-1.2, abs=0.05)
    assert cal.cv["platt"]["log_loss"] < cal.cv["isotonic"]["log_loss"]


def test_platt_on_raw_scores_of_an_identity_head():
    rng = np.random.default_rng(1)
    s = rng.normal(0.0, 3.0, 30_000)
    labels = (rng.uniform(size=s.size) < _sigmoid(1.5 * s + 0.5)).astype(int)
    cal = fit_calibration(s, labels, activation="identity", methods=("platt",))
    assert cal.feature == "raw"
    assert cal.a == pytest.approx(1.5, rel=0.05) and cal.b == pytest.approx(0.5, abs=0.06)


def test_isotonic_wins_on_a_step_function():
    # the true calibration jumps 0.1 → 0.8 at 0.5: no sigmoid fits it, a monotone step map does
    rng = np.random.default_rng(2)
    s = rng.uniform(0.0, 1.0, 20_000)
    labels = (rng.uniform(size=s.size) < np.where(s < 0.5, 0.1, 0.8)).astype(int)
    cal = fit_calibration(s, labels)
    assert cal.method == "isotonic"
    assert cal.cv["isotonic"]["log_loss"] < cal.cv["platt"]["log_loss"]
    assert cal.cv["isotonic"]["brier"] < cal.cv["platt"]["brier"]
    got = cal(np.array([0.1, 0.3, 0.7, 0.95]))
    np.testing.assert_allclose(got, [0.1, 0.1, 0.8, 0.8], atol=0.03)


def test_ece_by_hand_equal_mass_and_equal_width():
    p = [0.1, 0.2, 0.3, 0.6, 0.7, 0.9]
    y = [0, 0, 1, 1, 0, 1]
    # three bins of two: |0.15-0| + |0.45-1| + |0.8-0.5|, each weighted 1/3
    assert ece(p, y, bins=3, strategy="mass") == pytest.approx((0.15 + 0.55 + 0.3) / 3)
    # [0, 0.5): mean 0.2, rate 1/3; [0.5, 1]: mean 0.7333, rate 2/3; each weighted 1/2
    assert ece(p, y, bins=2, strategy="width") == pytest.approx(0.5 * (1 / 3 - 0.2) + 0.5 * (0.7 + 1 / 30 - 2 / 3))


def test_equal_width_reliability_matches_scikit_learn():
    from sklearn.calibration import calibration_curve

    rng = np.random.default_rng(3)
    p = rng.uniform(0.0, 1.0, 5_000)
    y = (rng.uniform(size=p.size) < p**1.5).astype(int)
    curve = reliability(p, y, bins=10, strategy="width")
    rate, mean_p = calibration_curve(y, p, n_bins=10, strategy="uniform")
    np.testing.assert_allclose([b["rate"] for b in curve], rate, atol=1e-9)
    np.testing.assert_allclose([b["mean_p"] for b in curve], mean_p, atol=1e-9)


@pytest.mark.parametrize(
    "cal",
    [
        Calibration("platt", feature="logit", a=0.71, b=-2.3, model_id="m", revision="r1"),
        Calibration("isotonic", x=(-3.0, 0.0, 2.5), y=(0.0, 0.25, 0.9), model_id="m", revision="r1"),
    ],
    ids=["platt", "isotonic"],
)
def test_json_round_trip_and_atomic_write(tmp_path, cal):
    path = cal.save(tmp_path / "maps" / "m.json")
    back = Calibration.load(path)
    assert back == cal and back.to_dict() == cal.to_dict()
    s = np.linspace(-5, 5, 101)
    np.testing.assert_array_equal(back(s), cal(s))
    assert json.loads(path.read_text())["format"] == "qrank-calibration"
    assert [p.name for p in path.parent.iterdir()] == ["m.json"]  # no temporary file left behind


def test_nan_is_never_written_and_a_failed_write_leaves_nothing(tmp_path):
    cal = Calibration("platt", a=1.0, b=0.0, cv={"platt": {"log_loss": float("nan")}})
    with pytest.raises(ValueError):
        cal.save(tmp_path / "m.json")
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "doc, field",
    [
        ({"method": "platt", "a": 1.0, "b": 0.0}, "calibration"),  # no format marker: not a map of ours
        ({"format": "qrank-calibration", "version": 99, "method": "platt", "a": 1.0, "b": 0.0}, "calibration"),
        ({"format": "qrank-calibration", "version": 1, "method": "spline"}, "method"),
        ({"format": "qrank-calibration", "version": 1, "method": "platt", "a": "1", "b": 0.0}, "a"),
        ({"format": "qrank-calibration", "version": 1, "method": "isotonic", "x": [1, 0], "y": [0.1, 0.2]}, "x"),
        ({"format": "qrank-calibration", "version": 1, "method": "isotonic", "x": ["a"], "y": [0.1]}, "x"),
        ({"format": "qrank-calibration", "version": 1, "method": "isotonic", "x": [0, 1], "y": [0.1, 1.2]}, "y"),
    ],
)
def test_a_bad_map_is_refused_naming_the_field(tmp_path, doc, field):
    path = tmp_path / "m.json"
    path.write_text(json.dumps(doc))
    with pytest.raises(InvalidInput) as err:
        Calibration.load(path)
    assert err.value.field == field


@pytest.mark.parametrize(
    "scores, labels, field",
    [
        ([0.1, float("nan"), 0.3, 0.9], [0, 0, 1, 1], "scores"),
        ([0.1, float("inf"), 0.3, 0.9], [0, 0, 1, 1], "scores"),
        ([0.1, 0.2, 0.3, 0.9], [0, 2, 1, 1], "labels"),
        ([0.1, 0.2, 0.3, 0.9], [0, 0, 1], "labels"),
        ([0.1, 0.2, 0.3, 0.9], ["no", "no", "yes", "yes"], "labels"),
    ],
)
def test_bad_judgements_are_refused_naming_the_field(scores, labels, field):
    with pytest.raises(InvalidInput) as err:
        fit_calibration(scores, labels, folds=2)
    assert err.value.field == field


def test_too_few_of_a_class_is_refused():
    with pytest.raises(InvalidInput, match="relevant") as err:
        fit_calibration([0.1, 0.2, 0.3, 0.4, 0.9], [0, 0, 0, 0, 1], folds=2)
    assert err.value.field == "labels"


def test_held_out_split_is_seeded_by_query_and_covers_every_pair():
    rng = np.random.default_rng(4)
    scores = {f"q{i}": {f"d{j}": float(rng.uniform()) for j in range(10)} for i in range(30)}
    qrels = {q: {d: int(v > 0.7) for d, v in docs.items()} for q, docs in scores.items()}
    _, a = held_out_calibration(scores, qrels, seed=7)
    _, b = held_out_calibration(scores, qrels, seed=7)
    assert a == b  # a fixed seed is a fixed split
    assert a["split"]["fit_queries"] + a["split"]["held_out_queries"] == 30
    assert a["split"]["fit_pairs"] + a["split"]["held_out_pairs"] == 300


def test_a_copy_of_a_local_model_finds_its_map(tmp_path):
    """A local folder is named by its content fingerprint (as the caches and eval's stages name it): a copy of the
    folder at another path, same fingerprint, finds the map fitted with the original; other weights do not."""
    settings = Settings(home=tmp_path)
    original = ModelInfo("/srv/models/scifact-ce", "cross-encoder", "reranker", 512, "float32", "cpu",
                         revision="local-1a2b3c4d")
    cal = Calibration("platt", a=2.0, b=-1.0, model_id=original.id, revision=original.revision)
    cal.save(calibration_path(settings, original))
    copy = ModelInfo("/tmp/elsewhere/ce-copy", "cross-encoder", "reranker", 512, "float32", "cpu",
                     revision=original.revision)
    assert load_calibration(settings, copy) == cal
    retrained = ModelInfo(original.id, "cross-encoder", "reranker", 512, "float32", "cpu", revision="local-99")
    assert load_calibration(settings, retrained) is None


def _fake_local_model(folder, weights: bytes):
    folder.mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "bert"}')
    (folder / "model.safetensors").write_bytes(weights)
    (folder / "tokenizer.json").write_text("{}")
    return folder


@pytest.mark.parametrize("scheme, keyed_by", [(0, "path"), (1, "path"), (1, "local")])
def test_a_map_fitted_under_an_older_fingerprint_is_rekeyed_once(tmp_path, caplog, scheme, keyed_by):
    """Maps fitted before 2026-12-08 were named by an older fingerprint of the folder (file times, then contents
    without the settings files), hashed with the folder's path or (that day) 'local': the same files find them,
    and the map is stored under today's fingerprint; other weights, or another run mode (+fp8), do not."""
    import logging

    from qrank.calibration import _digest
    from qrank.models.base import _local_revision, legacy_local_revisions

    folder = _fake_local_model(tmp_path / "models" / "ce", b"w" * 64)
    settings = Settings(home=tmp_path / "home")
    today = ModelInfo(str(folder), "cross-encoder", "reranker", 512, "float32", "cpu",
                      revision=_local_revision(folder))
    old = ModelInfo(today.id, today.kind, today.role, 512, "float32", "cpu",
                    revision=legacy_local_revisions(folder)[scheme])
    assert old.revision != today.revision
    fitted = Calibration("platt", a=2.0, b=-1.0, model_id=old.id, revision=old.revision)
    old_path = calibration_path(settings, old).with_name(
        f"ce-{_digest(str(old.id) if keyed_by == 'path' else 'local', old)}.json")
    fitted.save(old_path)

    fp8 = ModelInfo(today.id, today.kind, today.role, 512, "float32", "cpu", revision=today.revision + "+fp8")
    assert load_calibration(settings, fp8) is None
    with caplog.at_level(logging.INFO, logger="qrank.calibration"):
        found = load_calibration(settings, today)
    assert found is not None and (found.a, found.b) == (2.0, -1.0) and found.revision == today.revision
    assert "re-keyed" in caplog.text
    assert calibration_path(settings, today).is_file() and old_path.is_file()
    assert load_calibration(settings, today) == found  # now found where today's code looks first

    other = _fake_local_model(tmp_path / "models" / "other", b"x" * 64)
    other_info = ModelInfo(str(other), today.kind, today.role, 512, "float32", "cpu", revision=_local_revision(other))
    assert load_calibration(settings, other_info) is None


def test_storage_per_model_and_revision(tmp_path):
    settings = Settings(home=tmp_path)
    info = ModelInfo("../models/my-ce", "cross-encoder", "reranker", 512, "float32", "cpu", revision="abc")
    assert load_calibration(settings, info) is None
    cal = Calibration("platt", a=1.0, b=-0.5, model_id=info.id, revision=info.revision)
    path = cal.save(calibration_path(settings, info))
    assert path.parent == tmp_path / "calibration" and path.name.startswith("my-ce-")
    assert load_calibration(settings, info) == cal
    newer = ModelInfo(info.id, info.kind, info.role, 512, "float32", "cpu", revision="def")
    assert calibration_path(settings, newer) != path and load_calibration(settings, newer) is None
    path.write_text(path.read_text().replace('"abc"', '"zzz"'))  # a map copied in for other weights
    with pytest.raises(InvalidInput) as err:
        load_calibration(settings, info)
    assert err.value.field == "calibration"


def test_calibrated_layer_over_the_real_cross_encoder(ce_dir):
    st = pytest.importorskip("sentence_transformers")
    from qrank.models.registry import load_model
    from qrank.reranker import Reranker

    inner = load_model(str(ce_dir), "reranker")
    pairs = [
        ("Vitamin D deficiency raises the risk of fractures.", "Low serum vitamin D was linked to more hip fractures."),
        ("Vitamin D deficiency raises the risk of fractures.", "The enzyme folds in the endoplasmic reticulum."),
        ("Aspirin lowers the risk of colorectal cancer.", "Daily aspirin reduced colorectal adenoma incidence."),
    ]
    cal = Calibration("platt", feature="logit", a=0.55, b=-1.7, model_id=inner.info.id, revision=inner.info.revision)
    layer = Calibrated(inner, cal)
    # independent reference: sentence-transformers' scores, mapped by the Platt formula written out here
    raw = np.asarray(st.CrossEncoder(str(ce_dir), device="cpu").predict(pairs), dtype=np.float64)
    expected = _sigmoid(0.55 * np.log(raw / (1 - raw)) - 1.7)
    np.testing.assert_allclose(layer.score_pairs(pairs), expected, atol=1e-5)
    assert layer.count_tokens(pairs) == inner.count_tokens(pairs)
    calibrated, raw_again = layer.score_and_raw(pairs)
    np.testing.assert_allclose(raw_again, raw, atol=1e-5)
    np.testing.assert_array_equal(calibrated, layer.score_pairs(pairs))
    assert layer.info.extra["calibration"]["method"] == "platt" and layer.info.id == inner.info.id
    # under the facade the order follows the calibrated scores (a monotone map keeps the raw order)
    ranked = Reranker(layer).rerank(pairs[0][0], [d for _, d in pairs[:2]])
    assert [r.index for r in ranked] == [0, 1] and ranked[0].score == pytest.approx(expected[0], abs=1e-5)
    with pytest.raises(InvalidInput):
        Calibrated(inner, Calibration("platt", a=1.0, b=0.0, revision="other-weights"))

"""Calibrated relevance: a fitted map from a reranker's raw score to P(relevant), stored per model.

A :class:`Calibration` is either **Platt** — ``P = sigmoid(a * f + b)`` where ``f`` is the *logit* of the score
for heads whose score is already a sigmoid (cross-encoders, Qwen3 rerankers' ``P(yes)``) or the raw score for
identity heads — or **isotonic**: a monotone map stored as its breakpoints and applied by linear interpolation
between them, exactly as scikit-learn's ``IsotonicRegression`` predicts. It maps numpy arrays, is saved as JSON
(parameters or breakpoints, never a pickle) under ``<home>/calibration/`` per model id and revision, and
:class:`Calibrated` wraps a scoring model so that its scores come out calibrated.

Fitting needs scikit-learn (the ``eval`` extra) and lives in :mod:`qrank.eval.calibrate` (``qrank eval
--calibrate``); serving a fitted map needs only numpy.

>>> cal = Calibration("platt", feature="logit", a=0.5, b=-1.0)
>>> [round(float(p), 3) for p in cal(np.array([0.5, 0.99]))]
[0.269, 0.785]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import InvalidInput, QrankError
from .fileio import atomic_write_json
from .types import model_key_name

log = logging.getLogger(__name__)

METHODS = ("platt", "isotonic")
FORMAT = "qrank-calibration"
VERSION = 1
# scores are clipped here before the logit (float32 sigmoids reach exactly 0 and 1), and probabilities for log-loss
PROB_EPS = 1e-6


def platt_feature(scores: np.ndarray, feature: str) -> np.ndarray:
    """What Platt's logistic reads: the score's logit (``"logit"``) or the score itself (``"raw"``).

    >>> platt_feature(np.array([0.5, 0.0]), "logit").round(2).tolist()
    [0.0, -13.82]
    """
    if feature == "logit":
        p = np.clip(scores, PROB_EPS, 1.0 - PROB_EPS)
        return np.log(p) - np.log1p(-p)
    return scores


@dataclass(frozen=True)
class Calibration:
    """A fitted map from raw score to P(relevant); call it on an array of scores.

    >>> cal = Calibration("platt", feature="raw", a=2.0, b=-1.0)
    >>> [round(float(p), 4) for p in cal(np.array([0.5, 1.0]))]
    [0.5, 0.7311]
    >>> iso = Calibration("isotonic", x=(0.0, 1.0), y=(0.1, 0.9))
    >>> [round(float(p), 4) for p in iso(np.array([-1.0, 0.5, 2.0]))]
    [0.1, 0.5, 0.9]
    """

    method: str
    feature: str = "raw"
    a: float | None = None  # Platt: P = sigmoid(a * feature + b)
    b: float | None = None
    x: tuple[float, ...] = ()  # isotonic breakpoints (raw scores, increasing) and their probabilities
    y: tuple[float, ...] = ()
    model_id: str | None = None
    revision: str | None = None
    cv: dict = field(default_factory=dict, compare=False)  # {method: {"log_loss", "brier"}} of the fit
    fitted_on: dict = field(default_factory=dict, compare=False)  # n, positives, and where they came from

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise InvalidInput("method", f"must be one of {', '.join(METHODS)}, got {self.method!r}")
        if self.feature not in ("raw", "logit"):
            raise InvalidInput("feature", f"must be 'raw' or 'logit', got {self.feature!r}")
        if self.method == "platt" and not (_finite(self.a) and _finite(self.b)):
            raise InvalidInput("a", "Platt needs finite a and b")
        if self.method == "isotonic":
            try:
                x, y = np.asarray(self.x, dtype=np.float64), np.asarray(self.y, dtype=np.float64)
            except (TypeError, ValueError) as exc:
                raise InvalidInput("x", f"isotonic breakpoints must be numbers ({exc})") from exc
            if x.ndim != 1 or len(x) < 1 or len(x) != len(y) or np.any(np.diff(x) < 0) or not np.all(np.isfinite(x)):
                raise InvalidInput("x", "isotonic breakpoints must be finite, increasing, one y per x")
            if not np.all((y >= 0) & (y <= 1)) or np.any(np.diff(y) < 0):  # written so that NaN fails too
                raise InvalidInput("y", "isotonic probabilities must rise within [0, 1]")

    def __call__(self, scores) -> np.ndarray:
        s = np.asarray(scores, dtype=np.float64)
        if self.method == "platt":
            # sigmoid as exp(-log(1 + e^-z)): no overflow for a steep map's large |z|
            out = np.exp(-np.logaddexp(0.0, -(self.a * platt_feature(s, self.feature) + self.b)))
        else:  # np.interp clips outside the breakpoints: scikit-learn's out_of_bounds="clip"
            out = np.interp(s, self.x, self.y)
        return out.astype(np.float32)

    def to_dict(self) -> dict:
        """JSON-ready parameters (round-trips through :meth:`from_dict`)."""
        return {"format": FORMAT, "version": VERSION, **dataclasses.asdict(self), "x": list(self.x), "y": list(self.y)}

    def digest(self) -> str:
        """A short fingerprint of the map itself (not of how it was fitted): caches key calibrated scores by it.

        >>> Calibration("platt", a=1.0, b=0.0).digest() == Calibration("platt", a=1.0, b=0.5).digest()
        False
        """
        params = {k: v for k, v in self.to_dict().items() if k not in ("cv", "fitted_on")}
        return hashlib.sha256(json.dumps(params, sort_keys=True).encode()).hexdigest()[:16]

    @classmethod
    def from_dict(cls, data: dict) -> Calibration:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            raise InvalidInput("calibration", f"not a {FORMAT} document")
        if data.get("version") != VERSION:
            raise InvalidInput("calibration", f"version {data.get('version')!r} is not {VERSION}")
        names = {f.name for f in dataclasses.fields(cls)}
        kw = {k: v for k, v in data.items() if k in names}
        return cls(**{**kw, "x": tuple(kw.get("x", ())), "y": tuple(kw.get("y", ()))})

    def save(self, path: Path) -> Path:
        """Write the JSON atomically (a temporary file renamed into place); NaN is refused, never written.

        >>> import tempfile
        >>> p = Path(tempfile.mkdtemp()) / "m.json"
        >>> cal = Calibration("platt", a=1.0, b=0.0)
        >>> Calibration.load(cal.save(p)) == cal
        True
        """
        path = Path(path)
        atomic_write_json(path, self.to_dict(), indent=2, make_parents=True)
        return path

    @classmethod
    def load(cls, path: Path) -> Calibration:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise InvalidInput("calibration", f"{path}: unreadable ({exc})") from exc
        return cls.from_dict(data)


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and bool(np.isfinite(v))


# ------------------------------------------------------------------------------------------------ storage


def calibration_path(settings, info) -> Path:
    """Where a model's map lives: ``<home>/calibration/<name>-<hash of id and revision>.json``, where a local
    folder's id is its content fingerprint (:func:`~qrank.types.model_key_name`), so that a copy of the folder
    elsewhere finds the map (:func:`load_calibration` looks the hash up whatever the name).

    >>> from qrank.settings import Settings
    >>> from qrank.types import ModelInfo
    >>> info = ModelInfo("org/My-CE", "cross-encoder", "reranker", 512, "float32", "cpu", revision="abc")
    >>> calibration_path(Settings(home="/data"), info).as_posix()
    '/data/calibration/My-CE-875a59579690f0dd.json'
    """
    name = re.sub(r"[^A-Za-z0-9._-]+", "_", str(info.id).rstrip("/").rsplit("/", 1)[-1]) or "model"
    return Path(settings.home) / "calibration" / f"{name}-{_digest(model_key_name(info.id, info.revision), info)}.json"


def _digest(model_name: str, info) -> str:
    return hashlib.sha256(f"{model_name}\x00{info.revision}".encode()).hexdigest()[:16]


def _saved_map(settings, info) -> Path | None:
    """The file holding ``info``'s map: at :func:`calibration_path`, else one of the same hash under another folder
    name (a copy of a local model), else one written before 2026-12-08, hashed with the folder's path."""
    path = calibration_path(settings, info)
    if path.is_file():
        return path
    # the name part is the folder's: the hash alone says whose map it is (today's, then the path-keyed one)
    for digest in (path.stem.rsplit("-", 1)[1], _digest(str(info.id), info)):
        found = sorted(path.parent.glob(f"*-{digest}.json"))
        if found:
            return found[0]
    return None


def load_calibration(settings, info) -> Calibration | None:
    """The saved map of ``info``'s model and revision, or None when none was fitted. A local model's map fitted
    under an older fingerprint scheme of the same files is found too, and stored under today's.

    >>> from qrank.settings import Settings
    >>> from qrank.types import ModelInfo
    >>> import tempfile
    >>> load_calibration(Settings(home=tempfile.mkdtemp()), ModelInfo("m", "k", "reranker", 8, "float32", "cpu"))
    """
    path = _saved_map(settings, info)
    if path is None:
        return _rekeyed_legacy_map(settings, info)
    cal = Calibration.load(path)
    same = (model_key_name(cal.model_id, cal.revision), cal.revision) == (model_key_name(info.id, info.revision),
                                                                          info.revision)
    if not same:
        raise InvalidInput(
            "calibration", f"{path} was fitted for {cal.model_id}@{cal.revision}, not {info.id}@{info.revision}"
        )
    return cal


def _rekeyed_legacy_map(settings, info) -> Calibration | None:
    """A local model's map fitted before 2026-12-08, under a fingerprint of an older scheme
    (:func:`~qrank.models.base.legacy_local_revisions`): when the folder still gives that fingerprint (the same
    files) and the map says so, it is copied to today's :func:`calibration_path` with today's fingerprint, once,
    rather than asking for a refit. The old file stays (an older qrank may still read it)."""
    revision = info.revision or ""
    folder = Path(str(info.id))
    if not revision.startswith("local-") or not folder.is_dir():
        return None
    from .models.base import legacy_local_revisions

    # a suffix after the fingerprint (+fp8 ...) says how the model runs: only the same suffix is the same model
    suffix = revision[len("local-") + 16:]
    parent = calibration_path(settings, info).parent
    file_times, contents = legacy_local_revisions(folder)
    for old in (contents, file_times):
        old_info = dataclasses.replace(info, revision=old + suffix)
        # hashed with the folder's path, or (2026-12-08, contents only) with the 'local' key name; never 'local'
        # with file times, which cannot tell two folders of same-sized weights written in the same second apart
        digests = [_digest(str(info.id), old_info)] + ([_digest("local", old_info)] if old == contents else [])
        for digest in digests:
            for found in sorted(parent.glob(f"*-{digest}.json")):
                cal = Calibration.load(found)
                if cal.revision != old_info.revision:
                    continue
                cal = dataclasses.replace(cal, model_id=str(info.id), revision=info.revision)
                try:
                    cal.save(calibration_path(settings, info))
                    log.info("calibration map %s re-keyed to %s's current fingerprint %s (an older scheme of the "
                             "same files)", found, info.id, info.revision)
                except OSError as exc:  # a read-only home: the files are the same, so it serves as it is
                    log.info("calibration map %s: could not store it under the current fingerprint (%s)", found, exc)
                return cal
    return None


# ------------------------------------------------------------------------------------------------- layer


class Calibrated:
    """A scoring model whose scores are ``calibration`` applied to ``inner``'s: P(relevant) per pair.

    ``info`` says so (``score_activation="calibrated"`` where ModelInfo has that field, and
    ``extra["calibration"]`` either way, with the map's ``digest`` so that caches key calibrated scores apart);
    token counts and document layouts are ``inner``'s. Use :func:`calibrated` to build one: over a model that
    tokenizes locally it keeps the tokenize-once pair (``encode_pairs`` / ``score_encoded``).

    >>> from qrank.types import ModelInfo
    >>> class Raw:  # a stand-in model whose raw scores are 0 and 1
    ...     info = ModelInfo("m", "k", "reranker", 8, "float32", "cpu")
    ...     def score_pairs(self, pairs, *, instruction=None): return np.array([0.0, 1.0], dtype=np.float32)
    >>> layer = Calibrated(Raw(), Calibration("platt", a=2.0, b=0.0))
    >>> [round(float(p), 3) for p in layer.score_pairs([("q", "a"), ("q", "b")])], layer.info.score_activation
    ([0.5, 0.881], 'calibrated')
    """

    def __init__(self, inner, calibration: Calibration) -> None:
        info = inner.info
        if calibration.revision is not None and calibration.revision != info.revision:
            raise InvalidInput(
                "calibration", f"fitted for revision {calibration.revision}, the model is {info.revision}"
            )
        self.inner = inner
        self.calibration = calibration
        self.info = _calibrated_info(info, calibration)

    def score_pairs(self, pairs, *, instruction: str | None = None) -> np.ndarray:
        return self.score_and_raw(pairs, instruction=instruction)[0]

    def score_and_raw(self, pairs, *, instruction: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Calibrated and raw scores of one pass: what a ``raw_score`` field on request would return."""
        return self.apply(self.inner.score_pairs(pairs, instruction=instruction))

    def apply(self, raw) -> tuple[np.ndarray, np.ndarray]:
        """``(calibrated, raw)`` of raw scores the inner model gave."""
        raw = np.asarray(raw, dtype=np.float32)
        if not np.all(np.isfinite(raw)):  # the map would turn an infinite score into a finite-looking probability
            raise QrankError("the model produced a non-finite score (NaN or inf); it cannot be calibrated")
        if (self.info.extra or {}).get("deterministic"):  # the map row by row too: no SIMD body/tail difference
            from .models.base import one_by_one

            return one_by_one(self.calibration, raw, np.zeros((0,), dtype=np.float32)), raw
        return self.calibration(raw), raw

    def count_tokens(self, pairs, *, instruction: str | None = None) -> list[int]:
        return self.inner.count_tokens(pairs, instruction=instruction)

    def document_layouts(self, pairs, *, instruction: str | None = None):
        # the map changes scores, never what the model sees: the inner model's layout is this layer's
        from .models.base import Layer

        return Layer.document_layouts(self, pairs, instruction=instruction)

    def __repr__(self) -> str:
        return f"Calibrated({self.inner!r}, {self.calibration.method})"


class CalibratedEncoder(Calibrated):
    """:class:`Calibrated` over a model that tokenizes locally: the server's door encodes once, the worker
    calls :meth:`score_encoded` (or :meth:`score_encoded_and_raw` when a request asked for raw scores)."""

    def encode_pairs(self, pairs, *, instruction: str | None = None, max_length: int | None = None):
        # max_length (where the encoding cuts) only when asked: an inner encoder need not know it otherwise
        cut = {} if max_length is None else {"max_length": max_length}
        return self.inner.encode_pairs(pairs, instruction=instruction, **cut)

    def score_encoded(self, encoded) -> np.ndarray:
        return self.score_encoded_and_raw(encoded)[0]

    def score_encoded_and_raw(self, encoded) -> tuple[np.ndarray, np.ndarray]:
        return self.apply(self.inner.score_encoded(encoded))


def calibrated(inner, calibration: Calibration) -> Calibrated:
    """``inner`` with ``calibration`` over it, keeping the tokenize-once pair when ``inner`` has it."""
    from .models.base import PairEncoder

    return (CalibratedEncoder if isinstance(inner, PairEncoder) else Calibrated)(inner, calibration)


def require_calibration(settings, info) -> Calibration:
    """The saved map of ``info``'s model, or an :class:`InvalidInput` naming ``calibrated`` and the path."""
    cal = load_calibration(settings, info)
    if cal is None:
        raise InvalidInput(
            "calibrated", f"no calibration for {info.id} (revision {info.revision or '-'}) at "
            f"{calibration_path(settings, info)}; run qrank eval --calibrate with this model first"
        )
    return cal


def logit(p: float) -> float:
    """The raw score behind a probability (TEI's ``raw_scores``), clipped where float32 saturates.

    >>> round(logit(0.5), 6), round(logit(1.0), 2)
    (0.0, 16.64)
    """
    eps = 2.0**-24
    p = min(max(float(p), eps), 1.0 - eps)
    return math.log(p) - math.log1p(-p)


def raw_scores(scores, activation: str | None, field: str = "return_raw_scores") -> list[float]:
    """The model's raw output behind returned ``scores``: the logit of a sigmoid score, an identity (or tanh)
    head's score as it is. A calibrated model's raw scores come from its pass (:meth:`Calibrated.score_and_raw`);
    they cannot be recovered from the probabilities, so asking here is an error naming ``field``.

    >>> [round(x, 3) for x in raw_scores([0.5, 0.881], "sigmoid")], raw_scores([2.5], "identity")
    ([0.0, 2.0], [2.5])
    """
    if activation == "calibrated":
        raise InvalidInput(field, "this model stack cannot return the raw scores behind its calibrated ones")
    if activation == "sigmoid":
        return [logit(s) for s in scores]
    return [float(s) for s in scores]


def _calibrated_info(info, cal: Calibration):
    raw_activation = getattr(info, "score_activation", None)
    extra = {**info.extra, "calibration": {"method": cal.method, "raw_activation": raw_activation,
                                           "digest": cal.digest()}}
    if "score_activation" in {f.name for f in dataclasses.fields(info)}:  # the field arrives with the layers work
        return dataclasses.replace(info, extra=extra, score_activation="calibrated")
    return dataclasses.replace(info, extra=extra)

"""Fit and judge a reranker's calibration (``qrank eval --calibrate``): Platt vs isotonic by cross-validation,
expected calibration error (ECE) and reliability curves on held-out queries.

Labels follow the BEIR convention: a pair is relevant when its judgement grade is above 0, and an
*unjudged* pair counts as non-relevant. ECE uses **equal-mass** bins (each holds about the same number of
pairs, cut in score order), so that the crowded low-score region does not hide inside one wide bin.

>>> rng = np.random.default_rng(0)
>>> scores = rng.uniform(0.01, 0.99, 4000)
>>> labels = (rng.uniform(size=4000) < scores**2).astype(int)   # the model over-states relevance
>>> cal = fit_calibration(scores, labels)
>>> bool(ece(scores, labels) > 0.1), bool(ece(cal(scores), labels) < 0.03)
(True, True)
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np

from ..calibration import METHODS, PROB_EPS, Calibration, platt_feature
from ..errors import InvalidInput, require

log = logging.getLogger(__name__)

BINS = 10


def check_judged(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    """Validate judged pairs: finite 1-D scores and labels in {0, 1} of the same length.

    >>> check_judged([0.2, 0.9], [0, 1])[1].tolist()
    [0, 1]
    >>> check_judged([0.2, float("nan")], [0, 1])  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    qrank.errors.InvalidInput: scores: must be finite ...
    """
    try:
        s = np.asarray(scores, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("scores", f"must be numbers ({exc})") from exc
    try:
        y = np.asarray(labels, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise InvalidInput("labels", f"must be 0 or 1 ({exc})") from exc
    if s.ndim != 1 or y.ndim != 1 or len(s) != len(y):
        raise InvalidInput("labels", f"need one label per score (got shapes {s.shape} and {y.shape})")
    if not np.all(np.isfinite(s)):
        raise InvalidInput("scores", f"must be finite; {int((~np.isfinite(s)).sum())} are NaN or infinite")
    if not np.all((y == 0) | (y == 1)):
        raise InvalidInput("labels", "must be 0 (not relevant) or 1 (relevant)")
    return s, y.astype(np.int64)


def feature_of(activation: str | None, scores: np.ndarray) -> str:
    """Which feature Platt reads: ``"logit"`` of a sigmoid score, else the ``"raw"`` score.

    Without a known activation, scores that all lie in [0, 1] are taken as sigmoid outputs.

    >>> feature_of("sigmoid", np.array([3.0])), feature_of("identity", np.array([0.5]))
    ('logit', 'raw')
    >>> feature_of(None, np.array([0.5])), feature_of(None, np.array([-2.0]))
    ('logit', 'raw')
    """
    if activation is not None:
        return "logit" if activation == "sigmoid" else "raw"
    return "logit" if scores.size and scores.min() >= 0.0 and scores.max() <= 1.0 else "raw"


# ------------------------------------------------------------------------------------------------ fitting


def _fit_one(method: str, s: np.ndarray, y: np.ndarray, feature: str) -> Calibration:
    require("sklearn", "eval")
    if method == "platt":
        from sklearn.linear_model import LogisticRegression

        # C=inf: the plain maximum-likelihood logistic fit (Platt), no shrinkage towards a flat map
        lr = LogisticRegression(C=np.inf).fit(platt_feature(s, feature).reshape(-1, 1), y)
        return Calibration("platt", feature=feature, a=float(lr.coef_[0, 0]), b=float(lr.intercept_[0]))
    from sklearn.isotonic import IsotonicRegression

    iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(s, y)
    x, p = (tuple(float(v) for v in a) for a in (iso.X_thresholds_, iso.y_thresholds_))
    return Calibration("isotonic", feature=feature, x=x, y=p)


def fit_calibration(
    scores,
    labels,
    *,
    activation: str | None = None,
    methods: tuple[str, ...] = METHODS,
    folds: int = 5,
    groups=None,
    criterion: str = "log_loss",
    seed: int = 0,
    **identity,
) -> Calibration:
    """Fit each method, pick the one with the lowest mean ``criterion`` (``"log_loss"`` or ``"brier"``) over
    ``folds``-fold cross-validation, and refit it on all pairs.

    ``groups`` (e.g. query ids) keeps a group's pairs in one fold, so that the choice does not reward
    memorising a query. ``activation`` is the model's score activation (``"sigmoid"``, ``"identity"``, …);
    ``identity`` (``model_id``, ``revision``, ``fitted_on``) is stored with the map.

    >>> cal = fit_calibration([0.1, 0.2, 0.3, 0.7, 0.8, 0.9] * 20, [0, 0, 1, 0, 1, 1] * 20, folds=3)
    >>> cal.method in METHODS, sorted(cal.cv)
    (True, ['isotonic', 'platt'])
    """
    s, y = check_judged(scores, labels)
    if criterion not in ("log_loss", "brier"):
        raise InvalidInput("criterion", f"must be 'log_loss' or 'brier', got {criterion!r}")
    if not methods or any(m not in METHODS for m in methods):
        raise InvalidInput("methods", f"choose among {', '.join(METHODS)}, got {list(methods)!r}")
    if isinstance(folds, bool) or not isinstance(folds, int) or folds < 2:
        raise InvalidInput("folds", f"must be an integer of at least 2, got {folds!r}")
    positives = int(y.sum())
    if min(positives, len(y) - positives) < folds:
        raise InvalidInput(
            "labels",
            f"need at least {folds} relevant and {folds} non-relevant pairs ({positives} of {len(y)} are relevant)",
        )
    feature = feature_of(activation, s)
    cv = {m: _cross_validate(m, s, y, feature, folds, groups, seed) for m in methods}
    best = min(methods, key=lambda m: (cv[m][criterion], methods.index(m)))
    fitted_on = {"pairs": len(y), "positives": positives, "criterion": criterion, "folds": folds}
    fitted_on |= identity.pop("fitted_on", None) or {}
    return dataclasses.replace(_fit_one(best, s, y, feature), cv=cv, fitted_on=fitted_on, **identity)


def _cross_validate(method, s, y, feature, folds, groups, seed) -> dict:
    from sklearn.model_selection import GroupKFold, StratifiedKFold

    if groups is not None:
        splits = GroupKFold(folds, shuffle=True, random_state=seed).split(s, y, groups=np.asarray(groups))
    else:
        splits = StratifiedKFold(folds, shuffle=True, random_state=seed).split(s, y)
    pred = np.empty(len(y))
    for train, test in splits:
        if y[train].min() == y[train].max():  # a fold of one class has nothing to fit: predict its rate
            pred[test] = y[train].mean()
            continue
        pred[test] = _fit_one(method, s[train], y[train], feature)(s[test])
    return {"log_loss": log_loss(pred, y), "brier": brier(pred, y)}


# ------------------------------------------------------------------------------------------------ metrics


def log_loss(p, y) -> float:
    """Mean negative log-likelihood, probabilities clipped to [1e-6, 1 - 1e-6].

    >>> round(log_loss([0.5, 0.5], [0, 1]), 4)
    0.6931
    """
    p = np.clip(np.asarray(p, dtype=np.float64), PROB_EPS, 1 - PROB_EPS)
    y = np.asarray(y, dtype=np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def brier(p, y) -> float:
    """Mean squared error of the probabilities.

    >>> brier([1.0, 0.5], [1, 0])
    0.125
    """
    return float(np.mean((np.asarray(p, dtype=np.float64) - np.asarray(y, dtype=np.float64)) ** 2))


def reliability(p, y, bins: int = BINS, strategy: str = "mass") -> list[dict]:
    """Reliability-curve data: per bin, its score range, size, mean predicted probability and observed rate.

    ``strategy="mass"`` gives bins of (nearly) equal counts, cut in sorted order; ``"width"`` splits [0, 1]
    into equal intervals (empty ones are left out).

    >>> [(b["count"], b["mean_p"], b["rate"]) for b in reliability([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 0], bins=2)]
    [(2, 0.15, 0.0), (2, 0.85, 0.5)]
    """
    p, y = check_judged(p, y)
    if strategy == "mass":
        parts = [i for i in np.array_split(np.argsort(p, kind="stable"), min(bins, len(p))) if len(i)]
    elif strategy == "width":
        which = np.clip(np.floor(p * bins).astype(int), 0, bins - 1)
        parts = [np.flatnonzero(which == b) for b in range(bins) if np.any(which == b)]
    else:
        raise InvalidInput("strategy", f"must be 'mass' or 'width', got {strategy!r}")
    return [
        {
            "lo": float(p[i].min()),
            "hi": float(p[i].max()),
            "count": len(i),
            "mean_p": round(float(p[i].mean()), 12),  # rounded: the doctests and the JSON read clean numbers
            "rate": round(float(y[i].mean()), 12),
        }
        for i in parts
    ]


def ece(p, y, bins: int = BINS, strategy: str = "mass") -> float:
    """Expected calibration error: the sum over bins of (bin share) × |mean predicted − observed rate|.

    >>> ece([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 0], bins=2)   # (2/4)·|0.15 − 0| + (2/4)·|0.85 − 0.5|
    0.25
    """
    curve = reliability(p, y, bins, strategy)
    n = sum(b["count"] for b in curve)
    return round(sum(b["count"] / n * abs(b["mean_p"] - b["rate"]) for b in curve), 12)


# ---------------------------------------------------------------------------------------- held-out queries


def held_out_calibration(
    scores: dict[str, dict[str, float]],
    qrels: dict[str, dict[str, int]],
    *,
    activation: str | None = None,
    seed: int = 0,
    fit_share: float = 0.5,
    **identity,
) -> tuple[Calibration, dict]:
    """Fit on a seeded share of the *queries*, judge on the others: ``(map, JSON-ready section)``.

    ``scores`` is ``{qid: {doc_id: raw score}}`` (the reranked candidates); a candidate is relevant when
    ``qrels[qid][doc_id] > 0`` — unjudged candidates count as non-relevant (BEIR). The section holds the
    split, the cross-validation scores, ECE / Brier / log-loss of the raw and calibrated scores on the
    held-out queries (raw ones only when the raw scores are probabilities), and both reliability curves.

    >>> rng = np.random.default_rng(1)
    >>> s = {f"q{i}": {f"d{j}": float(rng.uniform()) for j in range(20)} for i in range(40)}
    >>> qrels = {q: {d: int(rng.uniform() < v**3) for d, v in docs.items()} for q, docs in s.items()}
    >>> cal, section = held_out_calibration(s, qrels, seed=0)
    >>> section["split"]["fit_queries"], section["split"]["held_out_queries"]
    (20, 20)
    >>> bool(section["held_out"]["calibrated"]["ece"] < section["held_out"]["raw"]["ece"])
    True
    """
    qids = sorted(q for q, docs in scores.items() if docs)
    if not 0.0 < fit_share < 1.0:
        raise InvalidInput("fit_share", f"must lie strictly between 0 and 1, got {fit_share!r}")
    order = np.random.default_rng(seed).permutation(len(qids))
    n_fit = min(max(1, round(len(qids) * fit_share)), len(qids) - 1)
    fit_q = sorted(qids[i] for i in order[:n_fit])
    held_q = sorted(qids[i] for i in order[n_fit:])

    def arrays(qs: list[str]):
        rows = [(q, s, int(qrels.get(q, {}).get(d, 0) > 0)) for q in qs for d, s in scores[q].items()]
        return [r[0] for r in rows], np.array([r[1] for r in rows], dtype=np.float64), np.array([r[2] for r in rows])

    groups, s_fit, y_fit = arrays(fit_q)
    _, s_held, y_held = arrays(held_q)
    if not held_q or len(y_held) == 0:
        raise InvalidInput("calibrate", "too few queries with reranked candidates to hold any out (need at least 2)")
    # as many folds as the fit half allows, at most 5: each fold needs a query and pairs of both classes
    folds = min(5, len(fit_q), int(y_fit.sum()), int(len(y_fit) - y_fit.sum()))
    if folds < 2:
        raise InvalidInput(
            "calibrate",
            f"the fit half ({len(fit_q)} queries, {int(y_fit.sum())} relevant of {len(y_fit)} pairs) needs at least "
            "2 queries and 2 relevant and 2 non-relevant pairs",
        )
    identity["fitted_on"] = {"queries": len(fit_q), "seed": seed, **(identity.get("fitted_on") or {})}
    cal = fit_calibration(s_fit, y_fit, activation=activation, folds=folds, groups=groups, seed=seed, **identity)
    calibrated = cal(s_held)
    raw_is_probability = bool(s_held.min() >= 0.0 and s_held.max() <= 1.0)

    def judged(p):
        return {"ece": ece(p, y_held), "brier": brier(p, y_held), "log_loss": log_loss(p, y_held)}

    section = {
        "method": cal.method,
        "feature": cal.feature,
        "cv": cal.cv,
        "criterion": cal.fitted_on["criterion"],
        "folds": folds,
        "bins": BINS,
        "binning": "equal-mass",
        "labels": "relevant = judgement grade > 0; unjudged candidates count as non-relevant (BEIR)",
        "split": {
            "seed": seed,
            "fit_queries": len(fit_q),
            "held_out_queries": len(held_q),
            "fit_pairs": len(y_fit),
            "fit_positives": int(y_fit.sum()),
            "held_out_pairs": len(y_held),
            "held_out_positives": int(y_held.sum()),
        },
        "held_out": {"raw": judged(s_held) if raw_is_probability else None, "calibrated": judged(calibrated)},
        "reliability": {
            "raw": reliability(s_held, y_held) if raw_is_probability else None,
            "calibrated": reliability(calibrated, y_held),
        },
        "map": cal.to_dict(),
    }
    return cal, section

"""The calibration part of the ``qrank eval --calibrate`` report: a markdown section and a reliability plot.

``section`` is what :func:`qrank.eval.calibrate.held_out_calibration` returns (plus ``path`` and ``systems``,
added by the runner).

>>> import numpy as np
>>> from qrank.eval.calibrate import held_out_calibration
>>> rng = np.random.default_rng(1)
>>> s = {f"q{i}": {f"d{j}": float(rng.uniform()) for j in range(10)} for i in range(20)}
>>> _, section = held_out_calibration(s, {q: {d: int(v > 0.8) for d, v in docs.items()} for q, docs in s.items()})
>>> markdown(section)[0]
'## Calibration'
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import require
from .report import _table
from ..fileio import atomic_write

log = logging.getLogger(__name__)

PLOT_NAME = "reliability.png"


def markdown(section: dict, plot_name: str = PLOT_NAME) -> list[str]:
    """Lines of the report's calibration section: set-up, CV table, held-out table, plot, where the map went."""
    split, held = section["split"], section["held_out"]
    systems = ", ".join(f"`{s}`" for s in section.get("systems", [])) or "the reranked systems"
    lines = [
        "## Calibration",
        "",
        f"Pairs: the reranked candidates of {systems} with the reranker's raw score. A pair is relevant when its "
        "judgement grade is above 0; **unjudged candidates count as non-relevant** (the BEIR convention), so "
        "P(relevant) here means P(judged relevant).",
        "",
        f"Queries were split at random (seed {split['seed']}): the map is fitted on {split['fit_queries']} queries "
        f"({split['fit_pairs']} pairs, {split['fit_positives']} relevant) and judged on the other "
        f"{split['held_out_queries']} ({split['held_out_pairs']} pairs, {split['held_out_positives']} relevant). "
        f"Platt (logistic on the {section['feature']} score) and isotonic were compared by "
        f"{section['folds']}-fold cross-validation grouped by query on the fit half; the lower "
        f"{section['criterion'].replace('_', '-')} wins and is refitted on the whole fit half.",
        "",
    ]
    lines += _table(
        ["method", "CV log-loss", "CV Brier", "chosen"],
        [
            [m, f"{v['log_loss']:.4f}", f"{v['brier']:.4f}", "yes" if m == section["method"] else ""]
            for m, v in section["cv"].items()
        ],
    )
    rows = [
        [name, f"{v['ece']:.4f}", f"{v['brier']:.4f}", f"{v['log_loss']:.4f}"]
        for name, v in (("raw score", held["raw"]), (f"calibrated ({section['method']})", held["calibrated"]))
        if v is not None
    ]
    lines += ["", f"Held-out queries (ECE over {section['bins']} {section['binning']} bins):", ""]
    lines += _table(["scores", "ECE", "Brier", "log-loss"], rows)
    if held["raw"] is None:
        lines += ["", "The raw scores are not probabilities (outside [0, 1]), so they have no ECE of their own."]
    lines += [
        "",
        f"![reliability]({plot_name})",
        "",
        f"The map (fitted on the fit half only, so the held-out figures describe it exactly) is saved to "
        f"`{section.get('path', '?')}`; `calibration.json` holds this section and the map's parameters.",
        "",
    ]
    return lines


def plot_reliability(section: dict, path: Path, title: str = "") -> None:
    """Observed relevance rate against mean predicted probability per bin, raw and calibrated, on held-out
    queries; the diagonal is perfect calibration."""
    require("matplotlib", "eval")
    import matplotlib

    matplotlib.use("Agg")  # files only; never a window
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 5), dpi=120)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1, label="perfect calibration")
    held = section["held_out"]
    for key, label, style in (("raw", "raw score", "o--"), ("calibrated", f"calibrated ({section['method']})", "s-")):
        curve = section["reliability"].get(key)
        if curve:
            ax.plot(
                [b["mean_p"] for b in curve],
                [b["rate"] for b in curve],
                style,
                ms=4,
                label=f"{label}, ECE {held[key]['ece']:.3f}",
            )
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel(f"mean predicted P(relevant) per bin ({section['bins']} {section['binning']} bins)")
    ax.set_ylabel("observed fraction relevant")
    ax.set_title(f"{title}: reliability on held-out queries" if title else "reliability on held-out queries")
    ax.grid(True, alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    try:
        atomic_write(Path(path), lambda tmp: fig.savefig(tmp, format="png"))
    finally:
        plt.close(fig)

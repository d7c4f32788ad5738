"""Find and read the reports ``qrank eval`` writes (``metrics.json``, ``run_config.json``, ``report.md``,
the quality-vs-latency PNG) for the evaluation tab. Read-only; nothing is recomputed.

>>> find_reports(Path("/nonexistent"))
[]
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_FILE = "metrics.json"
PLOT_FILE = "quality_vs_latency.png"
_MAX_DEPTH = 4  # report folders sit a few levels below the root at most; never walk a whole disk


@dataclass
class EvalReport:
    """One report folder, ready to show: a table (header + rows), the plot, the markdown, the set-up."""

    path: Path
    header: list[str] = field(default_factory=list)
    rows: list[list[Any]] = field(default_factory=list)
    plot: Path | None = None
    markdown: str = ""
    summary: str = ""


def find_reports(root: Path | None) -> list[Path]:
    """Folders under ``root`` (``root`` included) holding a ``metrics.json``, newest first.

    Newest is by the modification time of ``metrics.json``, which ``qrank eval`` writes last but one.
    """
    if root is None:
        return []
    root = Path(root).expanduser()
    if not root.is_dir():
        return []
    found = []
    for depth in range(_MAX_DEPTH + 1):
        pattern = "/".join(["*"] * depth + [METRICS_FILE])
        found += [p.parent for p in root.glob(pattern) if p.is_file()]
    return sorted(set(found), key=lambda d: (d / METRICS_FILE).stat().st_mtime, reverse=True)


def load_report(folder: Path) -> EvalReport:
    """Read one report folder; missing optional files leave their part empty.

    ``metrics.json`` is ``{system: {metric or cost: value}}``; the table has one row per system and one
    column per key (true/false flags left out), in the order they first appear.
    """
    folder = Path(folder)
    systems = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    if not isinstance(systems, dict):
        raise ValueError(f"{folder / METRICS_FILE} is not an object of systems")
    columns: list[str] = []
    for vals in systems.values():
        for key, value in (vals if isinstance(vals, dict) else {}).items():
            # flags (e.g. "cached") are bookkeeping, not quality or cost
            if key not in columns and not isinstance(value, bool):
                columns.append(key)
    rows = [[name, *(_cell((vals or {}).get(c)) for c in columns)] for name, vals in systems.items()]
    report = EvalReport(path=folder, header=["system", *columns], rows=rows)
    plot = folder / PLOT_FILE
    pngs = [plot] if plot.is_file() else sorted(folder.glob("*.png"))
    report.plot = pngs[0] if pngs else None
    md = folder / "report.md"
    if md.is_file():
        # the plot is shown as an image beside the text; a relative <img> would not load in the page
        report.markdown = re.sub(r"^!\[[^\]]*\]\([^)]*\)\s*$", "", md.read_text(encoding="utf-8"), flags=re.M)
    report.summary = _summary(folder)
    return report


def _summary(folder: Path) -> str:
    cfg_file = folder / "run_config.json"
    if not cfg_file.is_file():
        return f"`{folder}`"
    try:
        raw = json.loads(cfg_file.read_text(encoding="utf-8"))
    except ValueError:
        log.warning("unreadable %s", cfg_file)
        return f"`{folder}`"
    ds, cfg = raw.get("dataset") or {}, raw.get("config") or {}
    parts = [f"`{folder}`"]
    if ds.get("name"):
        parts.append(
            f"data set **{ds['name']}** ({ds.get('documents', '?')} documents, {ds.get('queries', '?')} queries)"
        )
    if cfg.get("embedder") or cfg.get("reranker"):
        parts.append(f"embedder `{cfg.get('embedder')}`, reranker `{cfg.get('reranker')}`")
    return " — ".join(parts)


def _cell(value):
    if isinstance(value, float):
        return round(value, 4)
    if value is None:
        return ""
    return value if isinstance(value, (int, str)) else json.dumps(value)

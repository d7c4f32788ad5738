"""``qrank eval --calibrate`` end to end on a tiny data set with the real shared cross-encoder."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pytest

from qrank.calibration import Calibration, calibration_path, load_calibration
from qrank.cli import main
from qrank.settings import Settings

pytest.importorskip("ranx")
pytest.importorskip("bm25s")
pytest.importorskip("sklearn")
pytest.importorskip("matplotlib")

TOPICS = {
    "bikes": ("Bicycle care", "adjust the brakes and oil the chain of the bicycle"),
    "bread": ("Sourdough", "feed the starter and bake the sourdough loaf"),
    "tea": ("Green tea", "steep the green tea leaves at eighty degrees"),
    "roses": ("Pruning roses", "cut rose stems above an outward bud in early spring"),
    "tyres": ("Car tyres", "check tyre pressure monthly and rotate the tyres"),
    "sleep": ("Sleep", "adults need seven to nine hours of sleep each night"),
    "knots": ("Sailing knots", "a bowline knot makes a fixed loop at the end of a rope"),
    "coffee": ("Espresso", "grind coffee beans finely and tamp them for espresso"),
    "python": ("Python lists", "append adds an item to the end of a python list"),
    "bees": ("Honey bees", "honey bees make honey from flower nectar in the hive"),
    "moon": ("Moon phases", "the moon waxes from new moon to full moon in two weeks"),
    "chess": ("Chess openings", "the sicilian defence answers e4 with c5 in chess"),
}
QUERIES = {
    "bikes": "how to oil a bicycle chain",
    "bread": "baking a sourdough loaf",
    "tea": "steep green tea leaves",
    "roses": "when to prune rose stems",
    "tyres": "how often to check tyre pressure",
    "sleep": "how many hours of sleep do adults need",
    "knots": "tie a bowline knot loop",
    "coffee": "grind beans for espresso coffee",
    "python": "add an item to a python list",
    "bees": "how do bees make honey",
    "moon": "moon phases from new to full",
    "chess": "sicilian defence chess opening",
}


def dataset(root):
    root.mkdir(parents=True)
    (root / "corpus.jsonl").write_text(
        # "guide" in every document and query: BM25 then returns every document, not only the one relevant
        "".join(json.dumps({"id": k, "title": t, "text": f"guide: {x}"}) + "\n" for k, (t, x) in TOPICS.items())
    )
    (root / "queries.jsonl").write_text(
        "".join(json.dumps({"id": k, "query": f"{q} guide", "relevant": [k]}) + "\n" for k, q in QUERIES.items())
    )
    return root


def test_calibrate_writes_the_plot_the_table_and_the_map(tmp_path, ce_dir, capsys):
    data, out, home = dataset(tmp_path / "data"), tmp_path / "out", tmp_path / "home"
    args = ["eval", "--home", str(home), "--no-progress", "--dataset", str(data), "--systems", "bm25,bm25+rerank"]
    args += ["--reranker", str(ce_dir), "--depth", "4", "--k", "4", "--sweep", "none", "--out", str(out)]
    assert main([*args, "--calibrate"]) == 0
    printed = capsys.readouterr().out

    section = json.loads((out / "calibration.json").read_text())
    split = section["split"]
    assert (split["fit_queries"], split["held_out_queries"]) == (6, 6)
    assert split["fit_pairs"] + split["held_out_pairs"] == 12 * 4  # every reranked candidate, judged or not
    assert section["method"] in ("platt", "isotonic") and set(section["cv"]) == {"platt", "isotonic"}
    assert section["binning"] == "equal-mass" and section["systems"] == ["bm25+rerank"]
    assert (out / "reliability.png").stat().st_size > 1000

    report = (out / "report.md").read_text()
    assert "## Calibration" in report and "![reliability](reliability.png)" in report
    assert "unjudged candidates count as non-relevant" in report
    assert "| raw score |" in report and f"| calibrated ({section['method']}) |" in report

    # the map lands where the model's scores are served from, and it is the one the report describes
    from qrank.models.base import resolve_model

    model = SimpleNamespace(id=str(ce_dir), revision=resolve_model(str(ce_dir)).revision)
    path = calibration_path(Settings(home=home), model)
    assert section["path"] == str(path) and str(path) in printed.replace("\n", "")
    cal = load_calibration(Settings(home=home), model)
    assert cal == Calibration.from_dict(section["map"]) and cal.model_id == str(ce_dir)
    assert np.all(np.diff(cal(np.linspace(0.0, 1.0, 50))) >= 0)  # a calibration never reorders scores


def test_calibrate_needs_a_reranked_system(tmp_path, capsys):
    data = dataset(tmp_path / "data")
    args = ["eval", "--home", str(tmp_path / "home"), "--dataset", str(data), "--systems", "bm25", "--calibrate"]
    assert main(args) == 2
    assert "calibrate: " in capsys.readouterr().err

"""notebooks/analysis.ipynb opens from the repository root as well as from notebooks/: with no
CIFT_REPORTS_DIR it finds reports/ beside dvc.yaml (fast; the tiny DAG's reports are drawn by
tests/test_dag.py)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import ROOT

REPORTS = {
    "summary.json": {
        "experiment": "main",
        "profile": "tiny",
        "batches": ["b1", "b2"],
        "promotions": 1,
        "final_production": "main/b1",
    },
    "continual.json": {"ACC": 0.3, "BWT": -0.05, "FWT": 0.1, "general_win_rate": 0.5},
    "table1.json": {
        "full": {"n": 9, "train_tokens": 900, "accuracy": 0.3, "accuracy_ci": [0.1, 0.5]},
        "filtered": {"n": 3, "train_tokens": 300, "accuracy": 0.35, "accuracy_ci": [0.2, 0.5]},
    },
    "proxy_ablation.json": {
        mode: {"selected": 6, "redundant_selected": 1, "final_accuracy": None}
        for mode in ("static", "dynamic")
    },
    "plots/accuracy_per_batch.json": [
        {"batch": b, "base": 0.1, "after_batch": 0.3, "final": 0.25} for b in ("b1", "b2")
    ],
    "plots/ifd_static_vs_dynamic.json": [
        {"batch": b, "proxy": p, "ifd": 0.5 + i / 10}
        for b in ("b1", "b2")
        for p in ("static", "dynamic")
        for i in range(3)
    ],
    "plots/cost_vs_accuracy.json": [
        {"arm": "full", "train_tokens": 900, "accuracy": 0.3},
        {"arm": "filtered", "train_tokens": 300, "accuracy": 0.35},
    ],
}


@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A checkout's shape: dvc.yaml at the root, reports/ beside it, the notebook in notebooks/."""
    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    for name, data in REPORTS.items():
        path = tmp_path / "reports" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(data))
    (tmp_path / "notebooks").mkdir()
    shutil.copy(ROOT / "notebooks" / "analysis.ipynb", tmp_path / "notebooks")
    return tmp_path


@pytest.mark.parametrize("cwd", [".", "notebooks"])
def test_notebook_finds_the_reports_from_root_or_notebooks(checkout, cwd, monkeypatch):
    nbclient = pytest.importorskip("nbclient")
    import nbformat

    monkeypatch.delenv("CIFT_REPORTS_DIR", raising=False)
    notebook = nbformat.read(checkout / "notebooks" / "analysis.ipynb", 4)
    client = nbclient.NotebookClient(
        notebook,
        timeout=120,
        kernel_name="python3",
        resources={"metadata": {"path": str(checkout / cwd)}},  # the kernel's working folder
    )
    client.execute()
    text = "".join(o.get("text", "") for c in notebook.cells for o in c.get("outputs", []))
    assert "main tiny batches ['b1', 'b2']" in text
    images = [
        o for c in notebook.cells for o in c.get("outputs", []) if "image/png" in o.get("data", {})
    ]
    assert len(images) == 3

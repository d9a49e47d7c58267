"""Table 1's arms beyond the DAG, on a copy of the shared tiny DAG (slow): the other selectors
as a Hydra sweep and the learning curve, each trained from the base on batch 1 and scored on
Table 1's test set. A module of its own so it can run on the worker that did not build the DAG."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import run
from tests.test_dag import table1_sweep

pytestmark = pytest.mark.slow


def test_tiny_selector_comparison(tiny_dag: Path):
    """The other selectors on batch 1 as a Hydra sweep, same candidates, each arm trained from
    the base and scored on Table 1's test set, beside Table 1's own arms (ifd is its filtered
    arm, none its full arm, random its random arm: the workspace trained those on the same
    candidates)."""
    started = time.perf_counter()
    cli = [sys.executable, "-m", "cift.cli"]
    filters = ["simdiv", "gdig"]  # random: the random_subset job below
    table1_sweep(tiny_dag, "experiment=compare_selectors", f"filter={','.join(filters)}")
    run([*cli, "report", "--exps", "--page-only"], tiny_dag)
    print(f"tiny selector comparison: {time.perf_counter() - started:.0f} s")
    rows = json.loads((tiny_dag / "reports" / "ablations.json").read_text())["experiments"]
    arms = {r["filter"]: r for r in rows if (r["experiment"] or "").startswith("compare_")}
    assert set(arms) == set(filters)
    for arm in arms.values():
        assert 0.0 <= arm["table1_filtered_accuracy"] <= 1.0 and arm["train_tokens"] > 0
    table1 = json.loads((tiny_dag / "reports" / "table1.json").read_text())
    assert table1["full"]["train_tokens"] > arms["simdiv"]["train_tokens"]
    page = (tiny_dag / "reports" / "report.html").read_text()
    assert "compare_selectors_gdig" in page


def test_tiny_learning_curve_starts_at_table1_base(tiny_dag: Path):
    """`cift curve`: batch 1's first n samples trained as Table 1 trains them; its n=0 row is the
    base, scored on the same cases from the same cached answers as Table 1's base arm."""
    out = run([sys.executable, "-m", "cift.cli", "curve", "--sizes", "2,4"], tiny_dag)
    rows = json.loads(out.stdout.strip().splitlines()[-1])
    assert [r["n"] for r in rows] == [0, 2, 4]
    steps = [r["optimizer_steps"] for r in rows]
    assert steps[0] == 0 < steps[1] <= steps[2]
    assert 0 < rows[1]["train_tokens"] < rows[2]["train_tokens"]
    for r in rows:
        for metric in ("accuracy", "ranked_accuracy"):
            lo, hi = r[f"{metric}_ci"]
            assert 0.0 <= lo <= r[metric] <= hi <= 1.0
    base = json.loads((tiny_dag / "reports" / "table1.json").read_text())["base"]
    assert (rows[0]["accuracy"], rows[0]["ranked_accuracy"]) == (
        base["accuracy"],
        base["ranked_accuracy"],
    )
    assert (tiny_dag / "runs" / "main" / "curve" / "n4").is_dir()
    assert "n=   4" in out.stderr

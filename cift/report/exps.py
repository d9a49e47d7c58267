"""Ablation results from queued DVC experiments (`dvc exp show --json`) and from Hydra
multirun folders (`cift run -m`), merged into one `ablations.json`.

Each experiment becomes one row: its name, where it came from, the experiment config it ran
(`experiment_name`, `filter.name`, `proxy.mode`), the chain's continual metrics and final
global-test accuracy, and batch 1's filtered arm (Table 1) when that stage ran. Each row is read
from the experiment's own files only (`own_files`).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

from cift.report.headline import HEADLINE

# the metrics files a row is built from (matched by how their path ends): the headline, or
# (a run that stopped before its report: a Hydra job on one target) the stage files
ROW_FILES = ("metrics.json", "continual.json", "table1/filtered.json")


def interval(metrics: dict, key: str) -> list | None:
    lo, hi = metrics.get(f"{key}_lo"), metrics.get(f"{key}_hi")
    return None if lo is None or hi is None else [lo, hi]


def own_files(name: str, params: dict, metrics: dict[str, dict]) -> dict[str, dict]:
    """{headline, continual, filtered}: this experiment's own files, never another's. A queued
    experiment's commit also holds the workspace's git-visible files (reports/*.json,
    runs/<other experiment>/*.json); a file written in another experiment is refused, with a
    warning, so the row shows nothing rather than the wrong experiment's numbers."""
    exp = params.get("experiment_name")
    paths = params.get("paths") or {}
    reports, runs = paths.get("reports", "reports"), paths.get("runs", "runs")
    wanted = {
        "headline": f"{reports}/{HEADLINE}",
        "continual": f"{reports}/continual.json",
        "filtered": f"{runs}/{exp}/table1/filtered.json",
    }
    out = {}
    for key, suffix in wanted.items():
        path, found = next(
            ((p, m) for p, m in metrics.items() if p.endswith(suffix) and m), ("", {})
        )
        owner = found.get("experiment") if key == "headline" else None
        if key == "continual" and found.get("rows"):  # version names are <experiment>/<batch>
            owner = str(found["rows"][0]).split("/")[0]
        if found and owner is not None and owner != exp:
            print(
                f"cift report --exps: {name}: {path} belongs to experiment {owner!r}, "
                f"not {exp!r}; not used",
                file=sys.stderr,
            )
            found = {}
        out[key] = found
    return out


def experiment_row(name: str, source: str, params: dict, metrics: dict[str, dict]) -> dict:
    """One row from a run's params and its metrics files ({path: content}): the headline
    (reports/metrics.json) where the run has its own, else the stage files it wrote."""
    files = own_files(name, params, metrics)
    head, continual, filtered = files["headline"], files["continual"], files["filtered"]
    row = {
        "name": name,
        "source": source,
        "experiment": params.get("experiment_name"),
        "filter": (params.get("filter") or {}).get("name"),
        "proxy": (params.get("proxy") or {}).get("mode"),
    }
    if head:
        arm, final = head["table1"]["filtered"], head["final"]
        return row | {
            **{k: head["continual"].get(k) for k in ("ACC", "BWT", "FWT")},
            "final_accuracy": final.get("accuracy"),
            "final_accuracy_ci": interval(final, "accuracy"),
            "table1_filtered_accuracy": arm.get("accuracy"),
            "table1_filtered_ci": interval(arm, "accuracy"),
            "train_tokens": arm.get("train_tokens"),
        }
    final = (continual.get("global") or {}).get("final") or {}
    return row | {
        "ACC": continual.get("ACC"),
        "BWT": continual.get("BWT"),
        "FWT": continual.get("FWT"),
        "final_accuracy": final.get("accuracy"),
        "final_accuracy_ci": final.get("accuracy_ci"),
        "table1_filtered_accuracy": filtered.get("accuracy"),
        "table1_filtered_ci": filtered.get("accuracy_ci"),
        "train_tokens": filtered.get("train_tokens"),
    }


def rows_from_dvc(
    show: list[dict], read: Callable[[str, str], dict | None] | None = None
) -> list[dict]:
    """Rows of `dvc exp show --json` (every experiment under every baseline commit). A failed
    experiment is left out: DVC shows it with its baseline's metrics, which are not its own; so
    is one still queued or running (a report made while the ablations run).

    DVC keeps only a metric's scalars (an interval is a list, so it is dropped); `read(rev,
    path)` returns the whole file from the experiment's commit where it is there (`git_reader`).
    """
    rows = []
    for baseline in show:
        for group in baseline.get("experiments") or []:
            if ((group.get("executor") or {}).get("state")) in ("failed", "queued", "running"):
                continue
            for rev in group.get("revs") or []:
                data = rev.get("data")
                if not data or rev.get("error"):
                    continue
                params = ((data.get("params") or {}).get("params.yaml") or {}).get("data") or {}
                metrics = {  # one `git show` per file a row uses, not per metrics file
                    p: (read and p.endswith(ROW_FILES) and read(rev["rev"], p))
                    or (m or {}).get("data")
                    for p, m in (data.get("metrics") or {}).items()
                }
                rows.append(
                    experiment_row(rev.get("name") or rev["rev"][:7], "dvc", params, metrics)
                )
    return rows


def dvc_exp_show(root: Path) -> list[dict]:
    # -A: experiments queued before the workspace's last commit belong to an older baseline;
    # `python -m dvc`: the dvc installed beside cift, whether or not its venv is on PATH;
    # --wait-for-lock: a queue worker finishing an ablation holds the repository for a moment
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "--wait-for-lock", "exp", "show", "-A", "--json"],
        cwd=root,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(proc.stdout or "[]")


def git_reader(root: Path) -> Callable[[str, str], dict | None]:
    """read(rev, path): a JSON file as an experiment's commit holds it, or None."""

    def read(rev: str, path: str) -> dict | None:
        proc = subprocess.run(
            ["git", "show", f"{rev}:{path}"], cwd=root, capture_output=True, text=True
        )
        if proc.returncode != 0:
            return None
        try:
            return json.loads(proc.stdout)
        except json.JSONDecodeError:
            return None

    return read


def rows_from_hydra(folders: Iterable[Path]) -> list[dict]:
    """Rows of `cift run` job folders (each has params.yaml and its own reports/ and runs/)."""
    rows = []
    for folder in folders:
        params = yaml.safe_load((folder / "params.yaml").read_text(encoding="utf-8"))
        metrics = {
            str(p.relative_to(folder)): json.loads(p.read_text(encoding="utf-8"))
            for pattern in ("reports/*.json", "runs/*/table1/filtered.json")
            for p in folder.glob(pattern)
        }
        rows.append(experiment_row(str(folder), "hydra", params, metrics))
    return rows


def hydra_job_folders(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("multirun/*/*/*/params.yaml"))


def merge(rows: list[dict]) -> dict[str, Any]:
    """ablations.json: every row, plus the two figures the proxy ablation and Table 1 lack."""
    static = next(
        (r for r in rows if r["proxy"] == "static" and r["final_accuracy"] is not None), None
    )
    random = next(
        (r for r in rows if r["filter"] == "random" and r["table1_filtered_accuracy"] is not None),
        None,
    )
    arms = [
        {
            "arm": r["experiment"] or r["name"],
            "train_tokens": r["train_tokens"],
            "accuracy": r["table1_filtered_accuracy"],
        }
        for r in rows
        if r["table1_filtered_accuracy"] is not None and r["train_tokens"]
    ]
    return {
        "experiments": rows,
        "static_final_accuracy": static["final_accuracy"] if static else None,
        "random_baseline": (
            {
                "accuracy": random["table1_filtered_accuracy"],
                "accuracy_ci": random["table1_filtered_ci"],
                "train_tokens": random["train_tokens"],
            }
            if random
            else None
        ),
        "table1_arms": arms,
    }

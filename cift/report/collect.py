"""The report files, read from one workspace's run folders (pure reads; `write_reports` writes).

summary.json, table1.json and proxy_ablation.json have the layout the README documents; every
figure comes from a metrics file a stage wrote, so a report never re-runs a model (the proxy
ablation embeds prompts with MiniLM to count redundant selections).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from cift.report.claims import case_table, claims
from cift.report.known import known_ablation, read_known
from cift.report.redundancy import record_origins, redundancy_per_batch, repeat_candidates
from cift.scoring.embeddings import Embed, minilm_embed

TABLE1_KEYS = (
    "accuracy",
    "accuracy_ci",
    "ranked_accuracy",
    "ranked_accuracy_ci",
    "top3",
    "mrr",
    "fault_cases",
    "fault_rate",
    "n",
    "train_tokens",
    "train_seconds",
    "optimizer_steps",
    "seconds",
)
# Table 1's arms: the base model, every candidate, the filter's selection, a random subset of
# its size, and the selection trained for full's optimizer steps (stages/table1.py)
TABLE1_ARMS = ("base", "full", "filtered", "random", "equal_compute")


class Workspace:
    """Where one experiment's files live, from its resolved config (params.yaml)."""

    def __init__(self, cfg: Any, root: str | Path = ".") -> None:
        root = Path(root)
        self.cfg = cfg
        self.exp = cfg.experiment_name
        self.batches = [b.name for b in cfg.data.batches]
        self.data = root / cfg.paths.data
        self.runs = root / cfg.paths.runs / self.exp
        self.reports = root / cfg.paths.reports

    def read(self, path: Path) -> Any:
        return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None

    def jsonl(self, path: Path) -> list[dict]:
        if not path.is_file():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        return [json.loads(line) for line in lines if line.strip()]

    def stage_files(self) -> dict[str, Path]:
        """Each stage's metrics file (the ones that record their own `seconds`), in DAG order."""
        files = {"general": self.data / "general" / "general.json"}
        for b in self.batches:
            files[f"generate@{b}"] = self.data / "batches" / b / "generate.json"
        for b in self.batches:
            files[f"filter@{b}"] = self.runs / b / "filter.json"
            files[f"select_static@{b}"] = self.runs / b / "static" / "filter.json"
            files[f"known@{b}"] = self.runs / b / "known.json"
            files[f"train@{b}"] = self.runs / b / "train.json"
            files[f"evaluate@{b}"] = self.runs / b / "evaluate.json"
        for arm in TABLE1_ARMS:
            files[f"table1@{arm}"] = self.runs / "table1" / f"{arm}.json"
        files["continual"] = self.reports / "continual.json"
        return files


def seconds_per_stage(ws: Workspace) -> dict[str, float]:
    out = {}
    for stage, path in ws.stage_files().items():
        metrics = ws.read(path)
        if metrics and metrics.get("seconds") is not None:
            out[stage] = metrics["seconds"]
    return out


def summary(ws: Workspace) -> dict:
    deployed = [ws.read(ws.runs / b / "deployed.json") for b in ws.batches]
    continual = ws.read(ws.reports / "continual.json") or {}
    seconds = seconds_per_stage(ws)
    final = next((d for d in reversed(deployed) if d), None)
    return {
        "experiment": ws.exp,
        "profile": ws.cfg.get("profile_name"),
        "batches": ws.batches,
        "promotions": sum(1 for d in deployed if d and d.get("decision") == "promote"),
        "final_production": final["version"] if final else None,
        "ACC": continual.get("ACC"),
        "BWT": continual.get("BWT"),
        "FWT": continual.get("FWT"),
        "ACC_ranked": continual.get("ACC_ranked"),
        "BWT_ranked": continual.get("BWT_ranked"),
        "FWT_ranked": continual.get("FWT_ranked"),
        "wall_seconds": round(sum(seconds.values()), 1),
        "seconds_per_stage": seconds,
    }


def table1_runs(ws: Workspace) -> dict[str, dict | None]:
    """Each arm's table1 stage file (None where the arm did not run)."""
    return {arm: ws.read(ws.runs / "table1" / f"{arm}.json") for arm in TABLE1_ARMS}


def table1(ws: Workspace) -> dict:
    """reports/table1.json: every arm's figures (None where it did not run), each with the
    paired difference to the base, and `claims` (cift.report.claims) with their verdicts."""
    runs = table1_runs(ws)
    out: dict = {}
    for arm, result in runs.items():
        if result is None:
            out[arm] = None
            continue
        out[arm] = {k: result.get(k) for k in TABLE1_KEYS} | {
            "vs_base": result.get("vs_base"),
            "vs_base_ranked": result.get("vs_base_ranked"),
        }
    full_tokens = (out["full"] or {}).get("train_tokens")
    for arm in ("filtered", "random", "equal_compute"):
        if out[arm] and full_tokens:
            out[arm]["cost_ratio"] = round(out[arm]["train_tokens"] / full_tokens, 3)
    cases = {
        arm: case_table(ws.jsonl(ws.runs / "table1" / arm / "cases.jsonl")) if runs[arm] else None
        for arm in TABLE1_ARMS
    }
    out["claims"] = claims(
        runs,
        cases,
        margin=float(ws.cfg.report.margin),
        max_cost_ratio=float(ws.cfg.report.max_cost_ratio),
        n_boot=int(ws.cfg.gate.bootstrap),
        seed=int(ws.cfg.seed),
    )
    return out


def proxy_ablation(
    ws: Workspace, embed: Embed = minilm_embed, static_final: float | None = None
) -> dict:
    """Static (initial proxy) vs dynamic (the chain's proxy) selections on the same candidates,
    both measured against the chain's own training history (redundant, repeats) and against the
    model deployed before each batch (known), with the paired comparison of the known shares
    under "dynamic_vs_static" (`cift.report.known`)."""
    dynamic = {b: ws.jsonl(ws.runs / b / "selected.jsonl") for b in ws.batches}
    static = {b: ws.jsonl(ws.runs / b / "static" / "selected.jsonl") for b in ws.batches}
    continual = ws.read(ws.reports / "continual.json") or {}
    final = (continual.get("global") or {}).get("final") or {}
    origins = record_origins(
        r for b in ws.batches for r in ws.jsonl(ws.data / "batches" / b / "records.jsonl")
    )
    where = {b: str(ws.runs / b / "known.jsonl") for b in ws.batches}
    known = known_ablation(
        ws.batches,
        {"static": static, "dynamic": dynamic},
        {b: read_known(Path(where[b])) for b in ws.batches},
        where,
        n_boot=int(OmegaConf.select(ws.cfg, "gate.bootstrap", default=1000)),
        seed=int(OmegaConf.select(ws.cfg, "seed", default=0)),
    )
    out: dict[str, Any] = {}
    for name, selection, accuracy in (
        ("static", static, static_final),
        ("dynamic", dynamic, final.get("accuracy")),
    ):
        per_batch = redundancy_per_batch(ws.batches, dynamic, selection, embed, origins=origins)
        per_batch = [r | k for r, k in zip(per_batch, known["per_batch"][name], strict=True)]
        out[name] = {
            "redundant_selected": sum(r["redundant_selected"] for r in per_batch),
            "repeats_selected": sum(r["repeats_selected"] for r in per_batch),
            "selected": sum(r["selected"] for r in per_batch),
            **known["totals"][name],
            "final_accuracy": accuracy,
            "per_batch": per_batch,
        }
    train = {b: ws.jsonl(ws.data / "batches" / b / "train.jsonl") for b in ws.batches}
    return out | {
        "dynamic_vs_static": known["comparison"],
        "repeat_candidates": repeat_candidates(ws.batches, dynamic, train, origins),
    }


def ifd_scores(ws: Workspace) -> list[dict]:
    """Every scored candidate's IFD under both proxies: rows {batch, proxy, ifd}."""
    rows = []
    for b in ws.batches:
        for proxy, path in (
            ("dynamic", ws.runs / b / "scores.jsonl"),
            ("static", ws.runs / b / "static" / "scores.jsonl"),
        ):
            rows += [
                {"batch": b, "proxy": proxy, "ifd": s["ifd"]}
                for s in ws.jsonl(path)
                if s.get("ifd") is not None
            ]
    return rows


def ifd_pairs(ws: Workspace) -> list[dict]:
    """Each candidate scored by both proxies: rows {batch, id, ifd_static, ifd_dynamic}, joined
    on the sample id (the `dvc plots` scatter of static against dynamic IFD)."""
    rows = []
    for b in ws.batches:
        static = {
            s["id"]: s["ifd"]
            for s in ws.jsonl(ws.runs / b / "static" / "scores.jsonl")
            if s.get("ifd") is not None
        }
        rows += [
            {"batch": b, "id": s["id"], "ifd_static": static[s["id"]], "ifd_dynamic": s["ifd"]}
            for s in ws.jsonl(ws.runs / b / "scores.jsonl")
            if s.get("ifd") is not None and s.get("id") in static
        ]
    return rows

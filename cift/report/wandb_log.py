"""What the report stage sends to its W&B run: Table 1, the accuracy matrix R, final production
and the base on the held-out sets (global test, probe) and the proxy ablation as tables, the
figures as images, and the headline numbers in the run summary.

The rows are plain lists (`report_tables`), so what a table holds is tested without wandb.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cift.report.heldout import probe_headline, score_rows
from cift.report.known import PROXY_COUNTS, proxy_modes

Table = tuple[list[str], list[list[Any]]]  # (columns, rows)


def _ci(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list | tuple) and len(value) == 2 else [None, None]


def table1_rows(table1: dict) -> Table:
    """One row per Table 1 arm that ran: n, tokens, accuracy and its interval, and the paired
    difference to the base with its interval."""
    columns = ["arm", "n", "train_tokens", "accuracy", "accuracy_lo", "accuracy_hi"]
    columns += ["vs_base", "vs_base_lo", "vs_base_hi", "cost_ratio"]
    rows = []
    for arm, r in table1.items():
        if not isinstance(r, dict):
            continue
        diff = r.get("vs_base") or {}
        accuracy, vs_base = _ci(r.get("accuracy_ci")), _ci(diff.get("diff_ci"))
        row = [arm, r.get("n"), r.get("train_tokens"), r.get("accuracy"), *accuracy]
        rows.append([*row, diff.get("diff"), *vs_base, r.get("cost_ratio")])
    return columns, rows


def claim_rows(table1: dict) -> Table:
    """Table 1's claims: estimate, interval and verdict (reports/table1.json `claims`)."""
    columns = ["claim", "metric", "estimate", "lo", "hi", "threshold", "verdict"]
    rows = [
        [c["claim"], c["metric"], c["estimate"], *_ci(c["ci"]), c["threshold"], c["verdict"]]
        for c in table1.get("claims") or []
    ]
    return columns, rows


def r_rows(continual: dict, batches: list[str]) -> Table:
    """The accuracy matrix R: row 0 the base, row k production after batch k; a column per
    batch's test split."""
    matrix = continual.get("R") or []
    names = continual.get("rows") or [str(i) for i in range(len(matrix))]
    rows = [[i, name, *row] for i, (name, row) in enumerate(zip(names, matrix, strict=True))]
    return ["row", "version", *batches], rows


PROXY_KEYS = (*PROXY_COUNTS, "final_accuracy")


def proxy_rows(proxy: dict) -> Table:
    """Static vs dynamic proxy: selections, known ones, redundant ones, repeats, final accuracy."""
    rows = [[m, *(proxy[m].get(k) for k in PROXY_KEYS)] for m in proxy_modes(proxy)]
    return ["proxy", *PROXY_KEYS], rows


def known_rows(proxy: dict) -> Table:
    """The paired known comparison (dynamic − static) per batch and in total, with each
    proxy's known and selected counts beside it."""
    paired = proxy.get("dynamic_vs_static") or {}
    columns = ["batch", "static_known", "static_selected", "dynamic_known", "dynamic_selected"]
    columns += ["diff", "diff_lo", "diff_hi", "dynamic_only", "static_only", "p_value"]
    counts = {
        m: {r["batch"]: r for r in (proxy.get(m) or {}).get("per_batch", [])}
        for m in ("static", "dynamic")
    }
    counts = {m: c | {"total": proxy.get(m) or {}} for m, c in counts.items()}
    rows = []
    for r in [*paired.get("per_batch", []), {"batch": "total", **(paired.get("total") or {})}]:
        side = [
            counts[m].get(r["batch"], {}).get(k)
            for m in ("static", "dynamic")
            for k in ("known_selected", "selected")
        ]
        diff = [r.get("diff"), *_ci(r.get("diff_ci"))]
        rows.append([r["batch"], *side, *diff, *(r.get(k) for k in columns[-3:])])
    return columns, rows


def heldout_rows(continual: dict) -> Table:
    """Final production and the base on the global test set and the probe set (patients' own
    words): both scores with their intervals and the fault rate."""
    columns = ["set", "model", "n", "accuracy", "accuracy_lo", "accuracy_hi"]
    columns += ["ranked_accuracy", "ranked_accuracy_lo", "ranked_accuracy_hi", "fault_rate"]
    rows = [
        [
            *(r["set"], r["model"], r["n"], r["accuracy"], *_ci(r["accuracy_ci"])),
            *(r["ranked_accuracy"], *_ci(r["ranked_accuracy_ci"]), r["fault_rate"]),
        ]
        for r in score_rows(continual)
    ]
    return columns, rows


def report_tables(reports: dict, continual: dict | None, batches: list[str]) -> dict[str, Table]:
    """{"table1", "table1_claims", "R", "heldout", "proxy_ablation", "proxy_known"}: the report's
    tables (R and heldout only when continual ran, proxy_known only when the paired known
    comparison is there)."""
    tables = {
        "table1": table1_rows(reports["table1"]),
        "table1_claims": claim_rows(reports["table1"]),
        "proxy_ablation": proxy_rows(reports["proxy_ablation"]),
    }
    if reports["proxy_ablation"].get("dynamic_vs_static"):
        tables["proxy_known"] = known_rows(reports["proxy_ablation"])
    if continual and continual.get("R"):
        tables["R"] = r_rows(continual, batches)
        tables["heldout"] = heldout_rows(continual)
    return tables


def figures(plots: Path) -> dict[str, Path]:
    """The report's PNG figures by name (`plots/<name>` in W&B)."""
    return {f"plots/{p.stem}": p for p in sorted(Path(plots).glob("*.png"))}


def log_report(run: Any, reports: dict, continual: dict | None, batches: list[str], plots: Path):
    """Tables and images into `run`'s history, headline numbers into its summary."""
    import wandb

    from cift.tracking import log_summary

    media: dict[str, Any] = {
        name: wandb.Table(columns=columns, data=rows)
        for name, (columns, rows) in report_tables(reports, continual, batches).items()
    }
    media |= {name: wandb.Image(str(path)) for name, path in figures(plots).items()}
    run.log(media)
    s = reports["summary"]
    headline = {k: s.get(k) for k in ("promotions", "ACC", "BWT", "FWT", "wall_seconds")}
    headline["table1"] = {
        arm: {k: r.get(k) for k in ("accuracy", "n", "train_tokens")}
        for arm, r in reports["table1"].items()
        if isinstance(r, dict)
    }
    proxy = reports["proxy_ablation"]
    keys = ("redundant_selected", "repeats_selected", "known_selected", "known_share")
    headline["proxy_ablation"] = {
        mode: {k: proxy[mode].get(k) for k in (*keys, "final_accuracy")}
        for mode in ("static", "dynamic")
        if isinstance(proxy.get(mode), dict)
    }
    claim = (proxy.get("dynamic_vs_static") or {}).get("claim") or {}
    lo, hi = _ci(claim.get("ci"))
    headline["proxy_ablation"] |= {
        "known_share_diff": claim.get("estimate"),
        "known_share_diff_lo": lo,
        "known_share_diff_hi": hi,
    }
    headline["probe"] = probe_headline(continual)  # patients' own words, final − base
    labels = {"known_claim": claim.get("verdict")}
    log_summary(run, headline, final_production=s.get("final_production"), **labels)
    return media

"""Writes the reports folder: the three JSON reports, the figures, and the HTML page."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cift.io.jsonl import write_json_atomic, write_text_atomic
from cift.report.collect import (
    Workspace,
    ifd_pairs,
    ifd_scores,
    proxy_ablation,
    summary,
    table1,
    table1_runs,
)
from cift.report.headline import HEADLINE, headline
from cift.report.html import render
from cift.report.plots import cost_rows, write_plots
from cift.scoring.embeddings import Embed, minilm_embed

REPORT_PAGE = "report.html"


def write_reports(cfg: Any, root: str | Path = ".", embed: Embed = minilm_embed) -> dict:
    """summary.json, table1.json, proxy_ablation.json, the headline metrics.json, plots/ and
    report.html under `paths.reports`. An `ablations.json` left there by `cift report --exps`
    supplies the static chain's final accuracy and the extra cost/accuracy points."""
    ws = Workspace(cfg, root)
    ablations = ws.read(ws.reports / "ablations.json")
    reports = {
        "summary": summary(ws),
        "table1": table1(ws),
        "proxy_ablation": proxy_ablation(ws, embed, (ablations or {}).get("static_final_accuracy")),
    }
    continual = ws.read(ws.reports / "continual.json")
    arms = table1_runs(ws)
    for name, obj in reports.items():
        write_json_atomic(ws.reports / f"{name}.json", obj)
    write_json_atomic(
        ws.reports / HEADLINE,
        headline(ws.exp, reports["summary"], arms, continual, reports["proxy_ablation"]),
    )
    write_plots(
        ws.reports / "plots",
        ws.batches,
        continual,
        ifd_scores(ws),
        cost_rows(reports["table1"], ablations),
        ifd_pairs(ws),
    )
    write_page(ws.reports)
    return reports


def write_page(folder: Path) -> Path:
    page = folder / REPORT_PAGE
    write_text_atomic(page, render(folder))
    return page

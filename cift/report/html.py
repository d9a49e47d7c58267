"""One self-contained HTML page (figures inlined as base64) from the reports folder's files."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from cift.report.heldout import COLUMNS, DIFF_COLUMNS, probe_diff_rows, score_rows
from cift.report.known import PROXY_COUNTS, proxy_modes

STYLE = """body{font-family:system-ui,sans-serif;max-width:960px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:4px 8px;
text-align:right}th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
img{max-width:100%}code{background:#f4f4f4;padding:1px 4px}"""


def _fmt(value) -> str:
    if value is None:
        return "—"
    if isinstance(value, float):
        return f"{value:.3f}"
    if isinstance(value, list) and len(value) == 2 and all(isinstance(v, float) for v in value):
        return f"[{value[0]:.3f}, {value[1]:.3f}]"
    return html.escape(str(value))


def table(rows: list[dict], columns: list[str]) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in columns)
    body = "".join(
        "<tr>" + "".join(f"<td>{_fmt(r.get(c))}</td>" for c in columns) + "</tr>" for r in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def image(path: Path) -> str:
    if not path.is_file():
        return ""
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<p><img alt="{html.escape(path.stem)}" src="data:image/png;base64,{data}"></p>'


def _load(folder: Path, name: str):
    path = folder / name
    return json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None


def proxy_section(proxy: dict) -> str:
    """The proxy ablation: per proxy and per batch, then the paired known comparison."""
    modes = proxy_modes(proxy)
    rows = [{"proxy": m, **{k: v for k, v in proxy[m].items() if k != "per_batch"}} for m in modes]
    per_batch = [{"proxy": m, **b} for m in modes for b in proxy[m].get("per_batch", [])]
    parts = [
        "<h2>Proxy ablation: known, redundant and repeated selections (batches 2–N)</h2>",
        "<p><code>known_selected</code>: selected samples the model deployed before the batch "
        "already gets right (its gold condition ranked first right after the prompt and "
        "<code>Diagnosis: </code>).</p>",
        table(rows, ["proxy", *PROXY_COUNTS, "final_accuracy"]),
        table(per_batch, ["proxy", "batch", *PROXY_COUNTS]),
    ]
    paired = proxy.get("dynamic_vs_static") or {}
    if paired:
        claim = paired.get("claim") or {}
        rows = [*paired.get("per_batch", []), {"batch": "total", **(paired.get("total") or {})}]
        columns = ["batch", "n", "diff", "diff_ci", "dynamic_only", "static_only", "p_value"]
        parts += [
            "<h3>Known share, dynamic − static (paired, same candidates)</h3>",
            f"<p>{html.escape(str(paired.get('method', '')))}</p>",
            table(rows, columns),
            f"<p>Claim: {html.escape(str(claim.get('claim')))} — "
            f"<b>{html.escape(str(claim.get('verdict')))}</b> "
            f"(estimate {_fmt(claim.get('estimate'))}, 95% CI {_fmt(claim.get('ci'))})</p>",
        ]
    return "".join(parts)


def render(folder: Path) -> str:
    """The page for a reports folder: summary, Table 1, proxy ablation, continual, ablations."""
    summary = _load(folder, "summary.json") or {}
    table1 = _load(folder, "table1.json") or {}
    proxy = _load(folder, "proxy_ablation.json") or {}
    continual = _load(folder, "continual.json") or {}
    ablations = _load(folder, "ablations.json")
    parts = [f"<h1>cift report: {html.escape(str(summary.get('experiment', '?')))}</h1>"]
    keys = [
        "profile",
        "batches",
        "promotions",
        "final_production",
        "ACC",
        "BWT",
        "FWT",
        "wall_seconds",
    ]
    parts.append(table([{"key": k, "value": summary.get(k)} for k in keys], ["key", "value"]))
    parts.append("<h2>Table 1: batch 1's data, five ways (Table 1's test set)</h2>")
    arms = [
        {"arm": a, **r, "vs_base": (r.get("vs_base") or {}).get("diff")}
        for a, r in table1.items()
        if isinstance(r, dict)
    ]
    columns = ["arm", "n", "train_tokens", "optimizer_steps", "train_seconds", "seconds"]
    columns += ["accuracy", "accuracy_ci", "ranked_accuracy", "ranked_accuracy_ci", "vs_base"]
    parts.append(table(arms, [*columns, "fault_cases"]))
    claims = table1.get("claims") or []
    parts.append(table(claims, ["claim", "metric", "estimate", "ci", "threshold", "n", "verdict"]))
    parts.append(proxy_section(proxy))
    parts.append("<h2>Continual learning</h2>")
    if continual.get("R"):
        names = summary.get("batches") or [f"b{i + 1}" for i in range(len(continual["R"][0]))]
        R = [
            {"row": row, **dict(zip(names, values, strict=False))}
            for row, values in zip(continual.get("rows", []), continual["R"], strict=False)
        ]
        parts.append(table(R, ["row", *names]))
    parts.append(
        table(
            [
                {"metric": k, "value": continual.get(k)}
                for k in ("ACC", "BWT", "FWT", "general_win_rate")
            ],
            ["metric", "value"],
        )
    )
    held = score_rows(continual)
    if held:
        parts.append(
            "<h2>Final production vs the base: global test set and patients' own words</h2>"
        )
        parts.append(table(held, COLUMNS))
        diffs = probe_diff_rows(continual)
        if diffs:
            parts.append("<p>Probe set, paired difference final − base:</p>")
            parts.append(table(diffs, DIFF_COLUMNS))
    if ablations:
        rows = ablations.get("experiments", [])
        chains = [r for r in rows if r.get("final_accuracy") is not None]
        arms = [r for r in rows if r.get("table1_filtered_accuracy") is not None]
        parts.append("<h2>Ablation chains (queued experiments and multiruns)</h2>")
        parts.append(
            table(
                chains,
                [
                    "name",
                    "source",
                    "proxy",
                    "filter",
                    "final_accuracy",
                    "final_accuracy_ci",
                    "ACC",
                    "BWT",
                    "FWT",
                ],
            )
        )
        parts.append("<h2>Selectors on batch 1 (global test)</h2>")
        parts.append(
            table(
                arms,
                [
                    "experiment",
                    "filter",
                    "source",
                    "table1_filtered_accuracy",
                    "table1_filtered_ci",
                    "train_tokens",
                ],
            )
        )
    for name in ("accuracy_per_batch", "ifd_static_vs_dynamic", "cost_vs_accuracy"):
        parts.append(image(folder / "plots" / f"{name}.png"))
    stages = summary.get("seconds_per_stage") or {}
    parts.append("<h2>Seconds per stage</h2>")
    parts.append(
        table([{"stage": k, "seconds": v} for k, v in stages.items()], ["stage", "seconds"])
    )
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>cift report</title>"
        f"<style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )

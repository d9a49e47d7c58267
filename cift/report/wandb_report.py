"""A W&B Report comparing the ablations, for users who sync runs online (wandb-workspaces).

Stage runs are grouped by experiment (`group` = experiment_name, `job_type` = stage), so one
runset grouped by `group` puts every experiment side by side.
"""

from __future__ import annotations

from typing import Any


def build_report(entity: str, project: str, ablations: dict | None = None) -> Any:
    import wandb_workspaces.reports.v2 as wr

    runs = wr.Runset(entity=entity, project=project, name="all experiments", groupby=["group"])
    rows = (ablations or {}).get("experiments", [])
    table = "\n".join(
        f"| {r['name']} | {r.get('final_accuracy')} | {r.get('table1_filtered_accuracy')} |"
        for r in rows
    )
    return wr.Report(
        entity=entity,
        project=project,
        title="cift ablations",
        description="Static vs dynamic proxy, full vs filtered data, selectors.",
        blocks=[
            wr.H1(text="Ablations"),
            wr.MarkdownBlock(
                text="| experiment | final accuracy | table1 filtered |\n|---|---|---|\n" + table
            ),
            wr.PanelGrid(
                runsets=[runs],
                panels=[
                    wr.BarPlot(title="Table 1 accuracy", metrics=["accuracy"]),
                    wr.BarPlot(title="Continual ACC", metrics=["ACC"]),
                    wr.BarPlot(title="Training tokens", metrics=["train_tokens"]),
                    wr.ScalarChart(title="kept by the filter", metric="kept"),
                ],
            ),
        ],
    )

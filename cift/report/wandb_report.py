"""A W&B Report comparing the experiments, for users who sync runs online (wandb-workspaces).

Every stage run carries the comparison keys in its config (cift.tracking.run_keys): `stage`,
`experiment`, `arm`, `batch`, `dvc_exp`, plus the resolved config's `filter.name`, `proxy.mode`
and `profile_name`. Each section of the report is one runset restricted to one stage (and,
for Table 1, the arm is a grouping key), so full and filtered are never averaged together and the
chain's filter runs never mix with select_static's.
"""

from __future__ import annotations

from typing import Any

# What separates two experiments: a named experiment, a queued `dvc exp`, a selector, a proxy.
EXPERIMENT_KEYS = ["config.experiment", "config.dvc_exp", "config.filter.name", "config.proxy.mode"]

FIGURES = ("accuracy_per_batch", "ifd_static_vs_dynamic", "cost_vs_accuracy")  # reports/plots/

# (section title, stage, extra group keys, panels as (kind, title, metrics))
SECTIONS: list[tuple[str, str, list[str], list[tuple[str, str, list[str]]]]] = [
    (
        "Table 1: full vs filtered",
        "table1",
        ["config.arm"],
        [
            ("bar", "Table 1 accuracy (global test)", ["accuracy"]),
            ("bar", "Difference to the base", ["vs_base/diff"]),
            ("bar", "Training tokens", ["train_tokens"]),
            ("line", "Training loss", ["train/loss"]),
        ],
    ),
    (
        "Continual learning",
        "continual",
        [],
        [
            ("bar", "ACC / BWT / FWT", ["ACC", "BWT", "FWT"]),
            ("bar", "Final production on the global test set", ["global/final/accuracy"]),
            ("bar", "Final production on patients' own words", ["probe/final/accuracy"]),
            ("bar", "Probe set: final − base", ["probe/vs_base/accuracy/diff"]),
            ("bar", "General win rate vs the base", ["general_win_rate"]),
        ],
    ),
    (
        "Filter (the chain's proxy)",
        "filter",
        ["config.batch"],
        [("bar", "Kept by the filter", ["kept"]), ("bar", "Candidates", ["n_in"])],
    ),
    (
        "select_static (the initial proxy)",
        "select_static",
        ["config.batch"],
        [("bar", "Kept with the initial proxy", ["kept"])],
    ),
    (
        "Evaluation per batch",
        "evaluate",
        ["config.batch"],
        [
            (
                "bar",
                "Accuracy on the batch's test split",
                ["this_batch/candidate/test", "this_batch/deployed/test"],
            ),
            ("bar", "Promoted", ["promote"]),
        ],
    ),
    (
        "Training per batch",
        "train",
        ["config.batch"],
        [("line", "Training loss", ["train/loss"]), ("bar", "Final loss", ["final_loss"])],
    ),
]


def runset(entity: str, project: str, title: str, stage: str, extra: list[str]) -> Any:
    """The runs of one stage, grouped by what separates experiments (plus `extra` keys)."""
    import wandb_workspaces.reports.v2 as wr
    from wandb_workspaces import expr

    return wr.Runset(
        entity=entity,
        project=project,
        name=title,
        filters=[expr.Config("stage") == stage],
        groupby=[*EXPERIMENT_KEYS, *extra],
    )


def panel(kind: str, title: str, metrics: list[str]) -> Any:
    import wandb_workspaces.reports.v2 as wr

    if kind == "line":
        return wr.LinePlot(title=title, x="Step", y=metrics)
    return wr.BarPlot(title=title, metrics=metrics, orientation="v")


def build_report(entity: str, project: str, ablations: dict | None = None) -> Any:
    """The report object (`.save()` publishes it; building it touches no network)."""
    import wandb_workspaces.reports.v2 as wr

    rows = (ablations or {}).get("experiments", [])
    table = "\n".join(
        f"| {r['name']} | {r.get('final_accuracy')} | {r.get('table1_filtered_accuracy')} |"
        for r in rows
    )
    blocks: list[Any] = [
        wr.H1(text="Ablations"),
        wr.MarkdownBlock(
            text="| experiment | final accuracy | table1 filtered |\n|---|---|---|\n" + table
        ),
    ]
    for title, stage, extra, panels in SECTIONS:
        blocks += [
            wr.H2(text=title),
            wr.PanelGrid(
                runsets=[runset(entity, project, title, stage, extra)],
                panels=[panel(*p) for p in panels],
            ),
        ]
    blocks += [
        wr.H2(text="Report tables and figures"),
        wr.PanelGrid(
            runsets=[runset(entity, project, "report", "report", [])],
            panels=[
                wr.WeavePanelSummaryTable(table_name=name)
                for name in ("table1", "R", "proxy_ablation", "proxy_known")
            ]
            + [wr.MediaBrowser(title="Figures", media_keys=[f"plots/{n}" for n in FIGURES])],
        ),
    ]
    return wr.Report(
        entity=entity,
        project=project,
        title="cift ablations",
        description="Static vs dynamic proxy, full vs filtered data, selectors.",
        blocks=blocks,
    )

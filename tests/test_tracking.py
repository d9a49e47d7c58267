"""Tracking as W&B and DVC users use it: comparison keys in config and tags, online exactly when
logged in, summaries, one run per Table 1 arm, the README's sync path, the report's tables and
panels, and DVCLive's curves at fixed paths."""

from __future__ import annotations

import re

import pytest

from cift.tracking import (
    RUN_KEYS,
    _NullRun,
    _wandb_run_args,
    flat_numbers,
    lightning_loggers,
    log_summary,
    run_keys,
    stage_run,
    tags,
    wandb_logged_in,
    wandb_mode,
)
from tests.conftest import ROOT, compose


@pytest.fixture
def cfg(tmp_path, monkeypatch):
    monkeypatch.setenv("DVC_ROOT", str(tmp_path))
    monkeypatch.delenv("DVC_EXP_NAME", raising=False)
    return compose(["experiment=static_proxy", "filter=random", "profile=tiny"])


def test_every_run_carries_the_comparison_keys_in_config_and_tags(cfg, monkeypatch):
    monkeypatch.setenv("DVC_EXP_NAME", "lofty-lamb")
    args = _wandb_run_args(cfg, "filter", batch="b1")
    expected = {
        "experiment": "static_proxy",
        "arm": "chain",
        "filter": "random",
        "proxy.mode": "static",
        "profile": "tiny",
        "batch": "b1",
        "dvc_exp": "lofty-lamb",
        "stage": "filter",
    }
    assert run_keys(cfg, "filter", batch="b1") == expected
    assert args["tags"] == [f"{k}:{expected[k]}" for k in RUN_KEYS]
    config = args["config"]
    # the resolved config stays whole (filter and proxy are still their groups' nodes)...
    assert config["filter"]["name"] == "random" and config["proxy"]["mode"] == "static"
    # ...and the other keys are top-level config values a runset can group by
    assert {
        k: config[k] for k in ("experiment", "arm", "profile", "batch", "dvc_exp", "stage")
    } == {k: v for k, v in expected.items() if k not in ("filter", "proxy.mode")}
    assert args["group"] == "static_proxy" and args["job_type"] == "filter"
    assert args["name"] == "static_proxy/filter/b1 (lofty-lamb)"


def test_run_names_are_distinct_per_arm_and_batch(cfg):
    names = [
        _wandb_run_args(cfg, stage, batch=batch, arm=arm)["name"]
        for stage, batch, arm in [
            ("table1", None, "full"),
            ("table1", None, "filtered"),
            ("filter", "b1", None),
            ("select_static", "b1", "select_static"),
            ("filter", "b2", None),
            ("continual", None, None),
        ]
    ]
    assert len(set(names)) == len(names)
    assert names[:2] == ["static_proxy/table1/full", "static_proxy/table1/filtered"]
    assert "arm:select_static" in tags(run_keys(cfg, "select_static", "b1", "select_static"))


def test_online_exactly_when_logged_in_and_wandb_mode_unset(cfg, tmp_path):
    home = {"NETRC": str(tmp_path / "netrc")}  # no such file: not logged in
    assert not wandb_logged_in(home) and wandb_mode(cfg, home) == "offline"
    assert wandb_mode(cfg, home | {"WANDB_API_KEY": "k" * 40}) == "online"
    (tmp_path / "netrc").write_text("machine api.wandb.ai\n  login user\n  password " + "k" * 40)
    assert wandb_logged_in(home) and wandb_mode(cfg, home) == "online"  # what `wandb login` wrote
    # another host's key does not count; WANDB_MODE always wins
    assert wandb_mode(cfg, home | {"WANDB_BASE_URL": "https://wandb.example.org"}) == "offline"
    assert wandb_mode(cfg, home | {"WANDB_MODE": "offline"}) == "offline"
    assert wandb_mode(cfg, home | {"WANDB_MODE": "disabled"}) == "disabled"
    cfg.logger.mode = "offline"  # an explicit logger.mode beats the login
    assert wandb_mode(cfg, home) == "offline"


def test_summaries_hold_nested_numbers_and_labels():
    run = _NullRun()
    written = log_summary(
        run, {"promote": True, "candidate": {"val/b1": {"accuracy": 0.5, "ci": [0, 1]}}}, v="x"
    )
    assert written == {"promote": 1, "candidate/val/b1/accuracy": 0.5, "v": "x"}
    assert run.summary == written
    assert flat_numbers({"a": None, "b": "s", "c": 2}) == {"c": 2}


def _readme_sync_glob() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    match = re.search(r"`wandb sync (\S+)`", text)
    assert match, "README names no `wandb sync PATH` command"
    return match.group(1)


def test_readme_sync_path_matches_an_offline_run(cfg, tmp_path, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")  # the only test that writes W&B files
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.chdir(tmp_path)
    import wandb

    with stage_run(cfg, "global_test") as run:
        log_summary(run, {"records": 3})
        assert run.config["stage"] == "global_test" and "stage:global_test" in run.tags
    wandb.teardown()  # the service writes the run's records out
    matches = list(tmp_path.glob(_readme_sync_glob()))
    assert len(matches) == 1 and matches[0].is_dir()
    (log,) = matches[0].glob("run-*.wandb")  # the records `wandb sync` uploads
    data = log.read_bytes()
    assert b"records" in data and b"stage:global_test" in data  # summary key, tag


def test_disabled_tracking_never_starts_wandb(cfg, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")
    with stage_run(cfg, "report") as run:
        assert isinstance(run, _NullRun)


def test_one_run_per_table1_arm_with_dvclive_curves_at_a_fixed_path(cfg, tmp_path, monkeypatch):
    """A training stage's loggers: Lightning's curves go into the stage's own W&B run (one run
    per arm, not a second one from Lightning) and into DVCLive where dvc.yaml declares the
    plots (dvclive/<stage>/<part>/plots); DVCLive neither writes dvc.yaml nor saves an
    experiment of its own."""
    pytest.importorskip("dvclive")
    import wandb
    from dvclive.lightning import DVCLiveLogger
    from lightning.pytorch.loggers import WandbLogger

    from cift.models.loading import ModelSpec
    from cift.train.fit import train_adapter
    from tests.test_train import SYSTEM, TRAINER, _cfg, _samples

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    with stage_run(cfg, "table1", arm="filtered") as run:
        loggers = lightning_loggers(cfg, "table1", "filtered", run)
        assert [type(lg) for lg in loggers] == [type(loggers[0]), WandbLogger]
        assert isinstance(loggers[0], DVCLiveLogger) and loggers[1].experiment is run
        train_adapter(
            _cfg(epochs=1),
            TRAINER | {"log_every_n_steps": 1},
            ModelSpec(name="tiny", source="tiny_random"),
            _samples(8),
            _samples(4, "r", words=1),
            system_prompt=SYSTEM,
            out_dir=tmp_path / "adapter",
            init_adapter=None,
            ckpt_dir=tmp_path / "ckpt",
            seed=7,
            logger=loggers,
        )
        log_summary(run, {"accuracy": 0.25})
    wandb.teardown()
    (folder,) = (tmp_path / "logs" / "wandb" / "wandb").glob("offline-run-*")  # one run
    (records,) = folder.glob("run-*.wandb")
    data = records.read_bytes()
    assert b"train/loss" in data and b"arm:filtered" in data and b"accuracy" in data
    curve = tmp_path / "dvclive" / "table1" / "filtered" / "plots" / "metrics" / "train"
    rows = (curve / "loss.tsv").read_text().splitlines()
    assert rows[0].split("\t")[:2] == ["step", "loss"] and len(rows) >= 3
    assert not (tmp_path / "dvc.yaml").exists() and not (tmp_path / ".dvc").exists()

    cfg.logger.backend = "none"  # DVCLive alone: the curves are DVC plots whatever the logger
    assert [type(lg) for lg in lightning_loggers(cfg, "train", "b1")] == [type(loggers[0])]

    import yaml

    dag = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    for stage, part in (("train", "${item.name}"), ("table1", "${key}")):
        plots = [next(iter(p)) if isinstance(p, dict) else p for p in dag[stage]["do"]["plots"]]
        assert f"dvclive/{stage}/{part}/plots" in plots


def test_report_tables_and_figures_for_the_report_run(cfg, tmp_path, monkeypatch):
    from cift.report.wandb_log import figures, log_report, report_tables

    pytest.importorskip("wandb")
    reports = {
        "summary": {"promotions": 1, "ACC": 0.4, "final_production": "main/b2"},
        "table1": {
            "full": {"n": 9, "train_tokens": 900, "accuracy": 0.3, "accuracy_ci": [0.1, 0.5]},
            "filtered": {
                "n": 3,
                "train_tokens": 300,
                "accuracy": 0.35,
                "accuracy_ci": [0.15, 0.55],
                "vs_base": {"diff": 0.05, "diff_ci": [-0.1, 0.2]},
                "cost_ratio": 0.333,
            },
            "claims": [
                {
                    "claim": "filtered matches full",
                    "metric": "accuracy",
                    "estimate": 0.05,
                    "ci": [-0.02, 0.12],
                    "threshold": -0.05,
                    "verdict": "supported",
                }
            ],
        },
        "proxy_ablation": {
            "static": {
                "selected": 6,
                "redundant_selected": 2,
                "repeats_selected": 1,
                "known_selected": 3,
                "per_batch": [{"batch": "b2", "selected": 6, "known_selected": 3}],
            },
            "dynamic": {
                "selected": 6,
                "redundant_selected": 1,
                "repeats_selected": 0,
                "known_selected": 1,
                "per_batch": [{"batch": "b2", "selected": 6, "known_selected": 1}],
            },
            "dynamic_vs_static": {
                "per_batch": [{"batch": "b2", "diff": -0.33, "diff_ci": [-0.6, -0.1]}],
                "total": {"diff": -0.33, "diff_ci": [-0.6, -0.1], "p_value": 0.5},
                "claim": {
                    "claim": "fewer",
                    "estimate": -0.33,
                    "ci": [-0.6, -0.1],
                    "verdict": "supported",
                },
            },
        },
    }
    continual = {"R": [[0.1, 0.2], [0.3, 0.2], [0.3, 0.4]], "rows": ["base", "b1", "b2"]}
    final = {"n_scored": 120, "accuracy": 0.4, "accuracy_ci": [0.3, 0.5], "fault_rate": 0.05}
    base = {"n_scored": 120, "accuracy": 0.1, "accuracy_ci": [0.05, 0.15], "fault_rate": 0.5}
    vs_base = {"accuracy": {"diff": 0.3, "diff_ci": [0.2, 0.4], "n": 120}}
    continual |= {"global": {"final": final}, "probe": {"final": final, "base": base}}
    continual["probe"]["vs_base"] = vs_base
    tables = report_tables(reports, continual, ["b1", "b2"])
    columns, rows = tables["heldout"]  # final and base on the global test and the probe set
    held = [dict(zip(columns, r, strict=True)) for r in rows]
    assert [(r["set"][:5], r["model"]) for r in held] == [
        ("globa", "final"),
        ("probe", "final"),
        ("probe", "base"),
    ]
    assert (held[2]["accuracy_hi"], held[2]["fault_rate"]) == (0.15, 0.5)
    columns, rows = tables["table1"]
    assert [r[0] for r in rows] == ["full", "filtered"]
    assert dict(zip(columns, rows[1], strict=True))["vs_base_hi"] == 0.2
    assert tables["R"] == (["row", "version", "b1", "b2"], [[0, "base", 0.1, 0.2],
                                                            [1, "b1", 0.3, 0.2],
                                                            [2, "b2", 0.3, 0.4]])  # fmt: skip
    assert [r[0] for r in tables["proxy_ablation"][1]] == ["static", "dynamic"]
    columns, rows = tables["proxy_known"]
    assert [r[0] for r in rows] == ["b2", "total"]
    b2, total = (dict(zip(columns, r, strict=True)) for r in rows)
    assert (b2["static_known"], b2["dynamic_known"], b2["diff_hi"]) == (3, 1, -0.1)
    assert (total["static_selected"], total["p_value"]) == (6, 0.5)
    columns, rows = tables["table1_claims"]
    claim = dict(zip(columns, rows[0], strict=True))
    assert (claim["lo"], claim["hi"], claim["verdict"]) == (-0.02, 0.12, "supported")

    import matplotlib.pyplot as plt

    (tmp_path / "plots").mkdir()
    fig, ax = plt.subplots()
    ax.plot([0, 1])
    fig.savefig(tmp_path / "plots" / "accuracy_per_batch.png")
    plt.close(fig)
    assert list(figures(tmp_path / "plots")) == ["plots/accuracy_per_batch"]

    class Run(_NullRun):
        def log(self, data, **_):
            self.logged = data

    run = Run()
    log_report(run, reports, continual, ["b1", "b2"], tmp_path / "plots")
    kinds = {k: type(v).__name__ for k, v in run.logged.items()}
    assert kinds == {
        "table1": "Table",
        "table1_claims": "Table",
        "proxy_ablation": "Table",
        "proxy_known": "Table",
        "R": "Table",
        "heldout": "Table",
        "plots/accuracy_per_batch": "Image",
    }
    assert run.logged["R"].columns == ["row", "version", "b1", "b2"]
    assert run.summary["table1/filtered/accuracy"] == 0.35
    assert run.summary["final_production"] == "main/b2"
    assert run.summary["proxy_ablation/static/known_selected"] == 3
    assert run.summary["known_claim"] == "supported"
    assert run.summary["proxy_ablation/known_share_diff_hi"] == -0.1
    assert run.summary["probe/vs_base"] == 0.3 and run.summary["probe/base_fault_rate"] == 0.5

    import wandb  # and a real (offline) run takes the tables, with their empty cells, and images

    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.chdir(tmp_path)
    with stage_run(cfg, "report") as real:
        log_report(real, reports, continual, ["b1", "b2"], tmp_path / "plots")
    wandb.teardown()
    (folder,) = (tmp_path / "logs" / "wandb" / "wandb").glob("offline-run-*")
    # table1, its claims, proxy_ablation, proxy_known, R, heldout
    assert len(list(folder.glob("files/media/table/*.table.json"))) == 6
    assert list(folder.glob("files/media/images/plots/accuracy_per_batch*.png"))


def test_wandb_report_groups_and_filters_by_the_comparison_keys():
    from wandb_workspaces import expr

    from cift.report.wandb_report import build_report

    report = build_report(
        "team",
        "cift",
        {
            "experiments": [
                {"name": "static_proxy", "final_accuracy": 0.2, "table1_filtered_accuracy": None}
            ]
        },
    )  # built, never saved: no network
    assert report.project == "cift" and report.entity == "team"
    assert "static_proxy" in report.blocks[1].text
    grids = {g.runsets[0].name: g for g in report.blocks if type(g).__name__ == "PanelGrid"}
    stage_of = {
        name: expr.expr_to_filters(grid.runsets[0].filters).value for name, grid in grids.items()
    }
    # one stage per runset: filter and select_static never share one
    assert stage_of["Filter (the chain's proxy)"] == "filter"
    assert stage_of["select_static (the initial proxy)"] == "select_static"
    table1 = grids["Table 1: full vs filtered"].runsets[0]
    assert stage_of[table1.name] == "table1"
    # full and filtered are separate groups, and so are experiments, queued exps, selectors
    # and proxy modes
    assert set(table1.groupby) >= {
        "config.arm",
        "config.experiment",
        "config.dvc_exp",
        "config.filter.name",
        "config.proxy.mode",
    }
    for grid in grids.values():
        keys = [expr.groupby_str_to_key(g) for g in grid.runsets[0].groupby]
        assert all(k.section == "config" for k in keys)
    panels = {type(p).__name__ + ":" + str(getattr(p, "title", None)) for p in table1_panels(grids)}
    assert "BarPlot:Table 1 accuracy (global test)" in panels
    report_grid = grids["report"]
    names = [getattr(p, "table_name", None) for p in report_grid.panels]
    assert {"table1", "R", "proxy_ablation"} <= set(names)
    media = [p for p in report_grid.panels if type(p).__name__ == "MediaBrowser"]
    assert media and "plots/accuracy_per_batch" in media[0].media_keys


def table1_panels(grids: dict) -> list:
    return grids["Table 1: full vs filtered"].panels


def test_an_online_run_that_cannot_start_logs_offline(cfg, monkeypatch, capsys):
    wandb = pytest.importorskip("wandb")
    modes = []

    def init(**kwargs):
        modes.append(kwargs["mode"])
        if kwargs["mode"] == "online":
            raise wandb.errors.CommError("no network")
        return type("Run", (_NullRun,), {"finish": lambda self: None})()

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_API_KEY", "k" * 40)  # logged in
    monkeypatch.setattr(wandb, "init", init)
    with stage_run(cfg, "continual") as run:
        log_summary(run, {"ACC": 0.5})
    assert modes == ["online", "offline"] and run.summary == {"ACC": 0.5}
    assert "logging offline" in capsys.readouterr().err

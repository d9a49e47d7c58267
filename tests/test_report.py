"""The reports folder from hand-built run files: redundancy counts, summary, Table 1, the page."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf

from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
from cift.report.build import write_reports
from cift.report.collect import Workspace, seconds_per_stage, summary, table1
from cift.report.redundancy import record_origins, redundancy_per_batch, repeat_candidates
from cift.scoring.embeddings import prompt_text


def topic_embed(texts: list[str]) -> np.ndarray:
    """Unit vectors by the text's first word: same first word = cosine 1, else 0."""
    words = sorted({t.split()[0] for t in texts})
    out = np.zeros((len(texts), len(words)), dtype=np.float32)
    for i, t in enumerate(texts):
        out[i, words.index(t.split()[0])] = 1.0
    return out


def sample(word: str, n: int = 0) -> dict:
    return {"id": f"{word}-{n}", "instruction": f"{word} case {n}", "input": "", "output": "x"}


def test_redundant_means_close_to_something_trained_on_earlier():
    history = {"b1": [sample("cough")], "b2": [sample("rash")], "b3": []}
    selections = {
        "b1": [sample("cough")],
        "b2": [sample("cough", 1), sample("fever")],  # repeats b1's topic once
        "b3": [sample("rash", 2), sample("cough", 3), sample("gout")],  # b1 and b2 both count
    }
    rows = redundancy_per_batch(["b1", "b2", "b3"], history, selections, topic_embed)
    assert [(r["batch"], r["selected"], r["redundant_selected"]) for r in rows] == [
        ("b2", 2, 1),
        ("b3", 3, 2),
    ]
    # the threshold is a cosine: orthogonal prompts are never redundant
    assert (
        redundancy_per_batch(
            ["b1", "b2"], {"b1": [sample("a")]}, {"b2": [sample("b")]}, topic_embed
        )[0]["redundant_selected"]
        == 0
    )
    assert prompt_text({"instruction": "i", "input": "ctx"}) == "i\nctx"


def test_a_repeat_is_a_near_duplicate_of_a_record_trained_on_earlier():
    """The generator's link, followed to the original, whatever the rendered text looks like."""
    records = [
        {"id": "b1-1", "near_duplicate_of": None},
        {"id": "b1-2", "near_duplicate_of": None},
        {"id": "b2-1", "near_duplicate_of": "b1-1"},
        {"id": "b3-1", "near_duplicate_of": "b2-1"},  # a repeat of a repeat
        {"id": "b3-2", "near_duplicate_of": "b1-2"},  # its original was never trained on
    ]
    origins = record_origins(records)
    assert origins == {
        "b1-1": "b1-1",
        "b1-2": "b1-2",
        "b2-1": "b1-1",
        "b3-1": "b1-1",
        "b3-2": "b1-2",
    }

    def s(rid: str, word: str) -> dict:
        return {**sample(word), "meta": {"record_id": rid}}

    history = {"b1": [s("b1-1", "cough")], "b2": [], "b3": []}
    selections = {"b2": [s("b2-1", "rash")], "b3": [s("b3-1", "gout"), s("b3-2", "fever")]}
    rows = redundancy_per_batch(
        ["b1", "b2", "b3"], history, selections, topic_embed, origins=origins
    )
    assert [(r["redundant_selected"], r["repeats_selected"]) for r in rows] == [(0, 1), (0, 1)]
    # the candidates a proxy could avoid: b3-2's original was never trained on by the chain
    candidates = {"b2": selections["b2"], "b3": selections["b3"]}
    avoidable = repeat_candidates(["b1", "b2", "b3"], history, candidates, origins)
    assert avoidable["total"] == 2
    assert [r["repeat_candidates"] for r in avoidable["per_batch"]] == [1, 1]


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    cfg = OmegaConf.create(
        {
            "experiment_name": "main",
            "profile_name": "tiny",
            "paths": {"data": "data", "runs": "runs", "reports": "reports"},
            "data": {"batches": [{"name": "b1"}, {"name": "b2"}]},
            "seed": 0,
            "gate": {"bootstrap": 500},
            "report": {"margin": 0.05, "max_cost_ratio": 0.4},
        }
    )
    runs, data = tmp_path / "runs" / "main", tmp_path / "data"
    write_json_atomic(data / "general" / "general.json", {"seconds": 10.0})
    for b, decision, version in (("b1", "promote", "main/b1"), ("b2", "keep", "main/b1")):
        write_json_atomic(data / "batches" / b / "generate.json", {"seconds": 5.0})
        write_json_atomic(runs / b / "train.json", {"seconds": 7.5})
        write_json_atomic(runs / b / "deployed.json", {"version": version, "decision": decision})
    write_jsonl_atomic(runs / "b1" / "selected.jsonl", [sample("cough")])
    write_jsonl_atomic(runs / "b2" / "selected.jsonl", [sample("fever")])
    write_jsonl_atomic(runs / "b2" / "static" / "selected.jsonl", [sample("cough", 1)])
    for b in ("b1", "b2"):
        write_jsonl_atomic(runs / b / "scores.jsonl", [{"id": "x", "ifd": 0.5}])
        write_jsonl_atomic(runs / b / "static" / "scores.jsonl", [{"id": "x", "ifd": 0.9}])
    for arm, n, tokens, acc in (("full", 30, 9000, 0.2), ("filtered", 10, 3000, 0.25)):
        write_json_atomic(
            runs / "table1" / f"{arm}.json",
            {
                "accuracy": acc,
                "accuracy_ci": [0.1, 0.3],
                "fault_cases": 3,
                "fault_rate": 0.1,
                "n": n,
                "train_tokens": tokens,
                "train_seconds": 12.0,
                "seconds": 20.0,
                "vs_base": {"diff": acc},
            },
        )
        right = round(acc * 20)  # Table 1's test cases, each arm's per-case scores
        write_jsonl_atomic(
            runs / "table1" / arm / "cases.jsonl",
            [
                {"id": f"t1-{i:04d}", "generated": float(i < right), "ranked": 1.0}
                for i in range(20)
            ],
        )
    write_json_atomic(
        tmp_path / "reports" / "continual.json",
        {
            "R": [[0.0, 0.0], [0.5, 0.0], [0.5, 0.25]],
            "ACC": 0.375,
            "BWT": 0.0,
            "FWT": 0.0,
            "ACC_ranked": 0.5,
            "BWT_ranked": -0.25,
            "FWT_ranked": 0.1,
            "general_win_rate": 0.5,
            "rows": ["main/base", "main/b1", "main/b1"],
            "global": {"final": {"accuracy": 0.3}},
            "seconds": 30.0,
        },
    )
    return Workspace(cfg, tmp_path)


def test_summary_and_table1_follow_the_documented_layout(workspace: Workspace):
    s = summary(workspace)
    assert s == {
        "experiment": "main",
        "profile": "tiny",
        "batches": ["b1", "b2"],
        "promotions": 1,
        "final_production": "main/b1",
        "ACC": 0.375,
        "BWT": 0.0,
        "FWT": 0.0,
        "ACC_ranked": 0.5,
        "BWT_ranked": -0.25,
        "FWT_ranked": 0.1,
        "wall_seconds": 10 + 2 * 5 + 2 * 7.5 + 2 * 20 + 30,
        "seconds_per_stage": s["seconds_per_stage"],
    }
    assert list(seconds_per_stage(workspace)) == [
        "general",
        "generate@b1",
        "generate@b2",
        "train@b1",
        "train@b2",
        "table1@full",
        "table1@filtered",
        "continual",
    ]
    t = table1(workspace)
    assert set(t) == {"base", "full", "filtered", "random", "equal_compute", "claims"}
    assert t["base"] is None and t["random"] is None  # arms that did not run
    for arm in (t["full"], t["filtered"]):
        assert {
            "accuracy",
            "accuracy_ci",
            "fault_cases",
            "fault_rate",
            "n",
            "train_tokens",
            "train_seconds",
        } <= set(arm)
    assert t["filtered"]["cost_ratio"] == pytest.approx(1 / 3, abs=1e-3)
    claims = {(c["claim"], c["metric"]): c for c in t["claims"]}
    matches = claims[("filtered matches full", "accuracy")]  # 5 of 20 right vs 4 of 20
    assert matches["estimate"] == pytest.approx(0.05) and matches["n"] == 20
    assert matches["verdict"] == "supported"  # one case gained, none lost: [0, +0.15]
    assert claims[("filtered matches full", "ranked_accuracy")]["verdict"] == "supported"
    assert (
        claims[("filtered at a third of the cost", "train_tokens ratio filtered / full")]["verdict"]
        == "supported"
    )
    beats = claims[("filtering beats random", "accuracy")]
    assert beats["verdict"] == "inconclusive" and beats["estimate"] is None  # random did not run


def test_write_reports_writes_every_file_and_a_self_contained_page(workspace: Workspace):
    root = workspace.reports.parent
    (workspace.reports / "ablations.json").write_text(
        json.dumps(
            {
                "static_final_accuracy": 0.1,
                "table1_arms": [{"arm": "random", "train_tokens": 2900, "accuracy": 0.05}],
                "experiments": [{"name": "static_proxy", "final_accuracy": 0.1}],
            }
        )
    )
    reports = write_reports(workspace.cfg, root, topic_embed)
    proxy = json.loads((workspace.reports / "proxy_ablation.json").read_text())
    assert proxy == reports["proxy_ablation"]
    assert proxy["static"]["per_batch"] == [
        {
            "batch": "b2",
            "selected": 1,
            "redundant_selected": 1,
            "repeats_selected": 0,
            "known_selected": None,  # known@b2 did not run here: not measured
            "no_gold": None,
            "known_share": None,
        }
    ]
    assert proxy["dynamic_vs_static"]["claim"]["verdict"] == "inconclusive"
    assert proxy["dynamic"]["redundant_selected"] == 0
    assert proxy["static"]["final_accuracy"] == 0.1 and proxy["dynamic"]["final_accuracy"] == 0.3
    for name in ("accuracy_per_batch", "ifd_static_vs_dynamic", "cost_vs_accuracy"):
        png = workspace.reports / "plots" / f"{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
        assert json.loads((png.with_suffix(".json")).read_text())
    cost = json.loads((workspace.reports / "plots" / "cost_vs_accuracy.json").read_text())
    assert [r["arm"] for r in cost] == ["full", "filtered", "random"]
    page = (workspace.reports / "report.html").read_text()
    assert page.count("data:image/png;base64,") == 3 and "static_proxy" in page
    assert "filtering beats random" in page and "inconclusive" in page  # the claims table
    written = json.loads((workspace.reports / "table1.json").read_text())
    assert written["claims"] == reports["table1"]["claims"]
    assert "http" not in page.replace("http-equiv", "")  # nothing fetched from elsewhere


def dvc_show(name: str, params: dict, metrics: dict) -> dict:
    data = {
        "params": {"params.yaml": {"data": params}},
        "metrics": {p: {"data": m} for p, m in metrics.items()},
    }
    return {"revs": [{"rev": "a" * 40, "name": name, "data": data}], "name": name}


def test_exps_merge_dvc_experiments_and_hydra_jobs(tmp_path: Path):
    from cift.report import exps

    show = [
        {"rev": "workspace", "data": {}, "experiments": None},
        {
            "rev": "b" * 40,
            "name": "main",
            "experiments": [
                dvc_show(
                    "static-run",
                    {
                        "experiment_name": "static_proxy",
                        "proxy": {"mode": "static"},
                        "filter": {"name": "ifd"},
                    },
                    {
                        "reports/continual.json": {
                            "ACC": 0.4,
                            "BWT": -0.1,
                            "FWT": 0.0,
                            "global": {"final": {"accuracy": 0.22}},
                        }
                    },
                ),
                {"revs": [{"rev": "c" * 40, "name": "failed", "data": None}]},
                dvc_show(
                    "crashed",
                    {"experiment_name": "x", "proxy": {"mode": "static"}},
                    {"reports/continual.json": {"global": {"final": {"accuracy": 0.9}}}},
                )
                | {"executor": {"state": "failed"}},
                dvc_show(  # still running: DVC shows it with its baseline's metrics too
                    "running",
                    {"experiment_name": "random_subset", "filter": {"name": "random"}},
                    {"reports/continual.json": {"global": {"final": {"accuracy": 0.9}}}},
                )
                | {"executor": {"state": "running"}},
            ],
        },
    ]
    job = tmp_path / "multirun" / "2026-11-21" / "10-00-00" / "0"
    (job / "runs" / "random_subset" / "table1").mkdir(parents=True)
    (job / "params.yaml").write_text(
        "experiment_name: random_subset\nfilter: {name: random}\nproxy: {mode: dynamic}\n"
    )
    (job / "runs" / "random_subset" / "table1" / "filtered.json").write_text(
        json.dumps({"accuracy": 0.05, "accuracy_ci": [0.0, 0.1], "train_tokens": 2900})
    )
    rows = exps.rows_from_dvc(show) + exps.rows_from_hydra(exps.hydra_job_folders(tmp_path))
    assert [(r["name"], r["source"]) for r in rows] == [("static-run", "dvc"), (str(job), "hydra")]
    merged = exps.merge(rows)
    assert merged["static_final_accuracy"] == 0.22
    assert rows[0]["final_accuracy_ci"] is None  # dvc exp show keeps scalars only

    def commit(rev: str, path: str) -> dict | None:  # the file as the experiment committed it
        final = {"accuracy": 0.22, "accuracy_ci": [0.1, 0.3]}
        return {"ACC": 0.4, "global": {"final": final}} if path.endswith("continual.json") else None

    assert exps.rows_from_dvc(show, commit)[0]["final_accuracy_ci"] == [0.1, 0.3]
    assert merged["random_baseline"] == {
        "accuracy": 0.05,
        "accuracy_ci": [0.0, 0.1],
        "train_tokens": 2900,
    }
    assert merged["table1_arms"] == [
        {"arm": "random_subset", "train_tokens": 2900, "accuracy": 0.05}
    ]


def test_proxy_ablation_counts_known_selections(workspace: Workspace):
    """known@b2's rows joined to both selections: counts, shares, the paired comparison, the
    headline's totals and the page; a selection the known file lacks is an error naming it."""
    from cift.report.collect import proxy_ablation

    root = workspace.reports.parent
    b2 = workspace.runs / "b2"
    write_jsonl_atomic(
        b2 / "known.jsonl",
        [
            {"id": "fever-0", "known": False, "selected_by": ["dynamic"]},
            {"id": "cough-1", "known": True, "selected_by": ["static"]},
        ],
    )
    reports = write_reports(workspace.cfg, root, topic_embed)
    proxy = reports["proxy_ablation"]
    assert (proxy["static"]["known_selected"], proxy["dynamic"]["known_selected"]) == (1, 0)
    assert (proxy["static"]["known_share"], proxy["dynamic"]["known_share"]) == (1.0, 0.0)
    assert proxy["dynamic"]["per_batch"][0]["known_selected"] == 0
    total = proxy["dynamic_vs_static"]["total"]
    assert total["diff"] == -1.0 and (total["dynamic_only"], total["static_only"]) == (0, 1)
    assert total["diff_ci"] == [-1.0, -1.0]  # one candidate each: every resample agrees
    assert proxy["dynamic_vs_static"]["claim"]["verdict"] == "supported"
    head = json.loads((workspace.reports / "metrics.json").read_text())
    assert head["proxy_ablation"]["static"]["known_selected"] == 1
    assert head["proxy_ablation"]["dynamic_vs_static"]["known_share_diff_hi"] == -1.0
    assert head["proxy_ablation"]["dynamic_vs_static"]["verdict"] == "supported"
    page = (workspace.reports / "report.html").read_text()
    assert "known_selected" in page and "<b>supported</b>" in page
    write_jsonl_atomic(b2 / "known.jsonl", [{"id": "fever-0", "known": False}])
    with pytest.raises(ValueError, match=r"b2/known\.jsonl: no row for selected samples"):
        proxy_ablation(workspace, topic_embed)


def flat(d: dict, prefix: str = "") -> dict:
    """A nested dict's leaves by dotted key, as `dvc exp show` lists them."""
    out = {}
    for k, v in d.items():
        out |= flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_headline_has_the_same_scalar_keys_whatever_the_experiment_ran(workspace: Workspace):
    """reports/metrics.json: Table 1 arms, continual, final accuracy, promotions, proxy
    ablation; scalars only (DVC drops lists), null where the experiment has no figure."""
    from cift.report.headline import headline

    root = workspace.reports.parent
    base = {"accuracy": 0.05, "accuracy_ci": [0.0, 0.1], "ranked_accuracy": 0.4}
    full = json.loads((workspace.runs / "table1" / "full.json").read_text())
    write_json_atomic(workspace.runs / "table1" / "full.json", full | {"base": base})
    continual = json.loads((workspace.reports / "continual.json").read_text())
    final = {"accuracy": 0.3, "accuracy_ci": [0.2, 0.4], "ranked_accuracy": 0.6}
    continual |= {"ACC_ci": [0.3, 0.45], "global": {"final": final}}
    probe = {"n_scored": 120, "accuracy": 0.5, "accuracy_ci": [0.4, 0.6], "fault_rate": 0.05}
    continual["probe"] = {"final": probe, "base": {"accuracy": 0.1, "fault_rate": 0.6}}
    continual["probe"]["vs_base"] = {"accuracy": {"diff": 0.4, "diff_ci": [0.3, 0.5], "n": 120}}
    write_json_atomic(workspace.reports / "continual.json", continual)
    write_reports(workspace.cfg, root, topic_embed)
    head = json.loads((workspace.reports / "metrics.json").read_text())
    leaves = flat(head)
    assert head["experiment"] == "main" and "dvc_exp" in head
    assert not any(isinstance(v, list | dict) for v in leaves.values())
    assert leaves["table1.base.accuracy_lo"] == 0.0 and leaves["table1.base.accuracy"] == 0.05
    assert leaves["table1.full.accuracy_hi"] == 0.3 and leaves["table1.filtered.accuracy"] == 0.25
    assert leaves["table1.filtered.ranked_accuracy"] is None  # a key, even without the figure
    assert (leaves["continual.ACC"], leaves["continual.ACC_lo"]) == (0.375, 0.3)
    assert leaves["continual.BWT_ranked"] == -0.25
    assert (leaves["final.accuracy_hi"], leaves["final.ranked_accuracy"]) == (0.4, 0.6)
    assert leaves["promotions"] == 1 and leaves["proxy_ablation.static.redundant_selected"] == 1
    assert leaves["proxy_ablation.static.known_selected"] is None  # known@b2 did not run here
    assert leaves["proxy_ablation.dynamic_vs_static.verdict"] == "inconclusive"
    # patients' own words: final production's scores, fault rate, and final − base
    assert (leaves["probe.accuracy"], leaves["probe.accuracy_lo"], leaves["probe.n"]) == (
        0.5,
        0.4,
        120,
    )
    assert (leaves["probe.fault_rate"], leaves["probe.base_fault_rate"]) == (0.05, 0.6)
    assert (leaves["probe.vs_base"], leaves["probe.vs_base_hi"]) == (0.4, 0.5)
    assert leaves["probe.vs_base_ranked"] is None  # a key, even without the figure
    page = (workspace.reports / "report.html").read_text()
    assert "patients&#x27; own words" in page and "0.400" in page  # the table and the difference
    # an experiment that ran neither Table 1 nor the chain's report inputs: the same keys
    empty = headline("random_subset", {}, {"full": None, "filtered": None}, None, {})
    assert set(flat(empty)) == set(leaves) and empty["experiment"] == "random_subset"
    # the IFD scatter's rows: each candidate under both proxies, joined on its id
    pairs = json.loads((workspace.reports / "plots" / "ifd_pairs.json").read_text())
    assert pairs == [
        {"batch": b, "id": "x", "ifd_static": 0.9, "ifd_dynamic": 0.5} for b in ("b1", "b2")
    ]


def test_dvc_plots_draw_numbers_on_quantitative_axes(workspace: Workspace):
    """Every top-level dvc.yaml plot over the report's JSON rows names fields the rows hold,
    and the x of a line or scatter is a number (a string on a quantitative axis draws nothing);
    horizontal bars put the count on x."""
    import yaml

    write_reports(workspace.cfg, workspace.reports.parent, topic_embed)
    dvc = yaml.safe_load((Path(__file__).parents[1] / "dvc.yaml").read_text())
    checked = 0
    for definition in dvc["plots"]:
        if isinstance(definition, str):
            continue
        ((title, spec),) = definition.items()
        for path, fields in spec["y"].items():
            name = Path(path.replace("${paths.reports}", str(workspace.reports)))
            rows = json.loads(name.read_text())
            assert rows, f"{title}: {path} is empty"
            for row in rows:
                assert isinstance(row[spec["x"]], int | float), (title, row)
                for y in [fields] if isinstance(fields, str) else fields:
                    assert isinstance(row[y], int | float), (title, y, row)
            checked += 1
    assert checked == 3
    (filter_plots,) = dvc["stages"]["filter"]["do"]["plots"][0].values()
    assert filter_plots["template"] == "bar_horizontal"
    assert (filter_plots["x"], filter_plots["y"]) == ("count", "bin")


def test_exps_refuse_files_that_belong_to_another_experiment(capsys: pytest.CaptureFixture):
    """A queued experiment's commit also holds the workspace's git-visible files: its row takes
    only its own headline and stage files."""
    from cift.report import exps

    params = {"experiment_name": "random_subset", "filter": {"name": "random"}}
    carried = {
        "reports/metrics.json": {"experiment": "main", "table1": {}, "final": {}},
        "reports/continual.json": {"ACC": 0.9, "rows": ["main/base"]},
        "runs/main/table1/filtered.json": {"accuracy": 0.9, "train_tokens": 10},
    }
    row = exps.experiment_row("r", "dvc", params, carried)
    assert row["ACC"] is None and row["table1_filtered_accuracy"] is None
    assert "belongs to experiment 'main'" in capsys.readouterr().err
    own = {
        "table1": {"filtered": {"accuracy": 0.3, "accuracy_lo": 0.2, "accuracy_hi": 0.4}},
        "continual": {"ACC": 0.5, "BWT": -0.1, "FWT": 0.0},
        "final": {"accuracy": 0.35, "accuracy_lo": 0.3, "accuracy_hi": 0.4},
    }
    own["table1"]["filtered"]["train_tokens"] = 2900
    metrics = carried | {"reports/metrics.json": {"experiment": "random_subset", **own}}
    row = exps.experiment_row("r", "dvc", params, metrics)
    assert (row["ACC"], row["final_accuracy_ci"]) == (0.5, [0.3, 0.4])
    assert (row["table1_filtered_accuracy"], row["table1_filtered_ci"]) == (0.3, [0.2, 0.4])
    assert row["train_tokens"] == 2900

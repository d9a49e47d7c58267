"""The DAG end to end on the tiny profile, in a throwaway copy of the repo (slow)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import pytest

from cift.io.jsonl import read_samples
from tests.conftest import run

pytestmark = pytest.mark.slow


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_train_evaluate_deploy(runs: Path) -> None:
    """Each batch: an adapter trained from the last deployed one, a gated evaluation, a pointer."""
    for batch, prev in (("b1", "base"), ("b2", "b1")):
        filtered = json.loads((runs / batch / "filter.json").read_text())
        quality = json.loads((runs / batch / "quality.json").read_text())
        assert quality["candidates"]["n"] == filtered["n_in"] > filtered["kept"]
        assert quality["selected"]["n"] == filtered["kept"] > 0
        train = json.loads((runs / batch / "train.json").read_text())
        assert train["n"] > 0 and train["train_tokens"] > train["supervised_tokens"] > 0
        assert (runs / "versions" / batch / "adapter_model.safetensors").is_file()
        evaluated = json.loads((runs / batch / "evaluate.json").read_text())
        for role in ("candidate", "deployed"):
            test = evaluated[role][f"test/{batch}"]
            assert 0.0 <= test["accuracy"] <= 1.0 and len(test["accuracy_ci"]) == 2
            assert 0.0 <= test["ranked_accuracy"] <= test["top3"] <= 1.0 and test["mrr"] > 0
        decision = json.loads((runs / batch / "decision.json").read_text())
        assert set(decision["terms"]) == {"accuracy", "forgetting", "safety", "judge"}
        accuracy = decision["terms"]["accuracy"]
        assert accuracy["verdict"] in ("non-inferior", "inconclusive", "inferior")
        assert len(accuracy["interval"]) == 2
        deployed = json.loads((runs / batch / "deployed.json").read_text())
        assert deployed["decision"] == ("promote" if decision["promote"] else "keep")
        previous = json.loads((runs / prev / "deployed.json").read_text())
        assert train["init_adapter"] == previous["adapter_path"]
        # train.carry_blocked: a blocked candidate's selection is trained on by the next one
        carried = jsonl(runs / prev / "pending.jsonl")
        assert train["carried"] == len(carried)
        pending = jsonl(runs / batch / "pending.jsonl")
        assert pending == (
            [] if decision["promote"] else carried + jsonl(runs / batch / "selected.jsonl")
        )
        assert decision["deployed"]["version"] == previous["version"]
    # b2 checks b1's validation split, by the direct score (tiny, as small: gate.metric=direct)
    forgetting = decision["terms"]["forgetting"]
    assert decision["metric"] == "direct" and forgetting["mode"] == "pooled"
    assert forgetting["pooled"]["n"] == forgetting["batches"]["b1"]["n"] > 0
    direct = evaluated["direct"]["candidate"]
    assert set(direct) == {"val/b1", "val/b2"} and direct["val/b1"]["n"] > 0
    assert set(evaluated["candidate"]) == {"val/b2", "test/b2"}  # answers: this batch's only
    assert evaluated["candidate"]["val/b2"]["n"] == 1  # gate.generated_cases
    # known@<i>: each sample either proxy selected on b2, ranked once by b1's deployed model
    known = [json.loads(line) for line in (runs / "b2" / "known.jsonl").read_text().splitlines()]
    selected = {
        mode: {json.loads(line)["id"] for line in path.read_text().splitlines() if line.strip()}
        for mode, path in (
            ("dynamic", runs / "b2" / "selected.jsonl"),
            ("static", runs / "b2" / "static" / "selected.jsonl"),
        )
    }
    assert sorted(r["id"] for r in known) == sorted(selected["dynamic"] | selected["static"])
    assert all(r["known"] is None or r["known"] == (r["rank"] == 1) for r in known)
    known_summary = json.loads((runs / "b2" / "known.json").read_text())
    deployed_b1 = json.loads((runs / "b1" / "deployed.json").read_text())
    assert known_summary["deployed"] == deployed_b1["version"]
    assert (runs / "b1" / "known.jsonl").read_text() == ""  # the first batch: nothing to compare
    names = ("base", "full", "filtered", "random", "equal_compute")
    arms = {a: json.loads((runs / "table1" / f"{a}.json").read_text()) for a in names}
    assert arms["full"]["n"] > arms["filtered"]["n"] > 0
    assert arms["full"]["base"] == arms["filtered"]["base"]  # same cases, same cached base answers
    assert arms["random"]["n"] == arms["filtered"]["n"] == arms["equal_compute"]["n"]
    assert arms["base"]["n"] == 0 and arms["base"]["train_tokens"] == 0
    assert arms["base"]["accuracy"] == arms["full"]["base"]["accuracy"]
    steps = {a: arms[a]["optimizer_steps"] for a in names}
    assert steps["equal_compute"] == steps["full"] > steps["filtered"] > 0  # train.min_steps
    table1_test = jsonl(runs.parent.parent / "data" / "global" / "table1_test.jsonl")
    assert len(table1_test) == 12 and table1_test[0]["id"].startswith("t1-")
    for arm in names:  # scored on Table 1's own test set, every case under both metrics
        assert arms[arm]["n_scored"] == 12 and arms[arm]["seconds"] > 0
        cases = jsonl(runs / "table1" / arm / "cases.jsonl")
        assert len(cases) == 12 and {"id", "generated", "ranked"} <= set(cases[0])
    heldout = jsonl(runs.parent.parent / "data" / "heldout" / "base.jsonl")
    assert {e["split"] for e in heldout} == {"global_test", "table1_test", "probe"}
    continual = json.loads((runs.parent.parent / "reports" / "continual.json").read_text())
    assert len(continual["R"]) == 3 and all(len(row) == 2 for row in continual["R"])
    assert continual["rows"][0] == "main/base" and 0.0 <= continual["ACC"] <= 1.0
    assert len(continual["R_ranked"]) == 3 and len(continual["ACC_ranked_ci"]) == 2
    assert arms["full"]["base"]["mrr"] > 0  # the base model gets a real ranked figure


def check_reports(reports: Path) -> None:
    """The documented reports/ layout, filled from the run."""
    summary = json.loads((reports / "summary.json").read_text())
    assert set(summary) == {
        "experiment",
        "profile",
        "batches",
        "promotions",
        "final_production",
        "ACC",
        "BWT",
        "FWT",
        "ACC_ranked",
        "BWT_ranked",
        "FWT_ranked",
        "wall_seconds",
        "seconds_per_stage",
    }
    assert summary["profile"] == "tiny" and summary["batches"] == ["b1", "b2"]
    assert summary["final_production"].startswith("main/")
    assert {"generate@b1", "train@b2", "known@b2", "table1@full", "continual"} <= set(
        summary["seconds_per_stage"]
    )
    table1 = json.loads((reports / "table1.json").read_text())
    for arm in ("base", "full", "filtered", "random", "equal_compute"):
        assert {
            "accuracy",
            "accuracy_ci",
            "ranked_accuracy",
            "ranked_accuracy_ci",
            "fault_cases",
            "fault_rate",
            "n",
            "train_tokens",
            "train_seconds",
            "seconds",
            "vs_base",
            "vs_base_ranked",
        } <= set(table1[arm])
    claims = {c["claim"] for c in table1["claims"]}
    assert {
        "filtered matches full",
        "filtered at a third of the cost",
        "equal compute: filtered at full's steps matches full",
        "filtering beats random",
    } == claims
    for claim in table1["claims"]:
        assert claim["verdict"] in ("supported", "not supported", "inconclusive")
        assert claim["estimate"] is not None  # every arm ran
        assert claim["ci"] is None or claim["ci"][0] <= claim["estimate"] <= claim["ci"][1]
    proxy = json.loads((reports / "proxy_ablation.json").read_text())
    for mode in ("static", "dynamic"):
        assert [r["batch"] for r in proxy[mode]["per_batch"]] == ["b2"]
        assert 0 <= proxy[mode]["redundant_selected"] <= proxy[mode]["selected"]
        # known@b2 ranked every selected sample with the model deployed after b1
        assert 0 <= proxy[mode]["known_selected"] <= proxy[mode]["selected"]
        assert proxy[mode]["known_selected"] + proxy[mode]["no_gold"] <= proxy[mode]["selected"]
        assert proxy[mode]["per_batch"][0]["known_selected"] == proxy[mode]["known_selected"]
    paired = proxy["dynamic_vs_static"]
    assert [r["batch"] for r in paired["per_batch"]] == ["b2"] and paired["total"]["n"] > 0
    repeats = proxy["repeat_candidates"]  # candidates repeating what the chain trained on
    assert [r["batch"] for r in repeats["per_batch"]] == ["b2"]
    assert 0 <= repeats["total"] <= repeats["per_batch"][0]["candidates"]
    assert proxy["dynamic"]["repeats_selected"] <= repeats["total"]
    lo, hi = paired["total"]["diff_ci"]
    assert -1.0 <= lo <= paired["total"]["diff"] <= hi <= 1.0
    assert set(paired["claim"]) == {"claim", "estimate", "ci", "verdict"}
    assert paired["claim"]["verdict"] in ("supported", "not supported", "inconclusive")
    assert proxy["dynamic"]["final_accuracy"] is not None
    assert proxy["static"]["final_accuracy"] is None  # filled by the ablations
    continual = json.loads((reports / "continual.json").read_text())
    assert {"R", "ACC", "BWT", "FWT", "general_win_rate"} <= set(continual)
    for name in ("accuracy_per_batch", "ifd_static_vs_dynamic", "cost_vs_accuracy"):
        assert (reports / "plots" / f"{name}.png").stat().st_size > 1000
    page = (reports / "report.html").read_text()
    assert page.count("data:image/png;base64") == 3
    assert "equal_compute" in page and "filtering beats random" in page
    headline = json.loads((reports / "metrics.json").read_text())
    assert headline["experiment"] == "main" and headline["promotions"] == summary["promotions"]
    for arm in ("base", "full", "filtered", "random", "equal_compute"):
        scores = headline["table1"][arm]
        assert scores["accuracy_lo"] <= scores["accuracy"] <= scores["accuracy_hi"]
        assert scores["ranked_accuracy"] is not None and scores["train_tokens"] is not None
        assert scores["accuracy"] == table1[arm]["accuracy"]
    assert headline["continual"]["ACC"] == continual["ACC"]
    assert headline["continual"]["ACC_ranked"] == continual["ACC_ranked"]
    assert headline["final"]["accuracy"] == continual["global"]["final"]["accuracy"]
    # patients' own words beside the global test set: both models, the paired difference
    probe = continual["probe"]
    for role in ("final", "base"):
        assert probe[role]["n_scored"] == 8 and 0.0 <= probe[role]["fault_rate"] <= 1.0
        assert len(probe[role]["accuracy_ci"]) == len(probe[role]["ranked_accuracy_ci"]) == 2
    diff = probe["vs_base"]["accuracy"]
    assert diff["n"] == 8 and diff["diff_ci"][0] <= diff["diff"] <= diff["diff_ci"][1]
    assert probe["vs_base"]["ranked_accuracy"]["n"] == 8
    assert headline["probe"]["accuracy"] == probe["final"]["accuracy"]
    assert headline["probe"]["fault_rate"] == probe["final"]["fault_rate"]
    assert headline["probe"]["vs_base"] == diff["diff"]
    assert headline["probe"]["vs_base_lo"] == diff["diff_ci"][0]
    assert "patients' own words" in (reports / "report.html").read_text()
    assert headline["proxy_ablation"]["dynamic"]["final_accuracy"] is not None
    for mode in ("static", "dynamic"):
        assert headline["proxy_ablation"][mode]["known_selected"] == proxy[mode]["known_selected"]
    known_head = headline["proxy_ablation"]["dynamic_vs_static"]
    assert known_head["known_share_diff"] == paired["total"]["diff"]
    assert known_head["verdict"] == paired["claim"]["verdict"]
    assert "known_selected" in (reports / "report.html").read_text()
    assert json.loads((reports / "plots" / "ifd_pairs.json").read_text())  # b2's candidates


def drawn_marks(svg: str) -> int:
    """Shapes with geometry inside a Vega mark group (not axes, legends, titles, or the
    invisible voronoi cells of tooltips): a line over unparsable x values draws none."""
    import re
    import xml.etree.ElementTree as ET

    count = 0

    def walk(element: ET.Element, group: str) -> None:
        nonlocal count
        cls = element.get("class") or group
        if element.tag.endswith("}path") and re.match(r"M\s*-?\d", element.get("d", "")):
            count += "role-mark" in cls and "voronoi" not in cls
        for child in element:
            walk(child, cls)

    walk(ET.fromstring(svg), "")
    return count


def render_plots(shown: dict, names: set[str] | None = None) -> dict[str, bytes]:
    """The vega plots of `dvc plots show|diff --json` (every one, or `names`) rendered to PNG
    without a browser (vl-convert); each must hold data rows and draw marks from them."""
    import io

    import vl_convert
    from PIL import Image

    pngs = {}
    for name, entries in shown["data"].items():
        for entry in entries:
            if entry["type"] != "vega" or (names is not None and name not in names):
                continue
            spec = entry["content"]
            spec = json.loads(spec) if isinstance(spec, str) else spec
            assert spec["data"]["values"], f"{name}: no data rows"
            assert drawn_marks(vl_convert.vegalite_to_svg(spec)) > 0, f"{name}: nothing drawn"
            png = vl_convert.vegalite_to_png(spec)
            colors = Image.open(io.BytesIO(png)).convert("RGB").getcolors(maxcolors=1 << 16)
            assert colors is None or len(colors) > 2, f"{name}: a blank image"
            pngs[name] = png
    return pngs


def shared_answers(repo: Path) -> str:
    """The workspace's answer and rank cache, keyed by version weights, sample, decoding and
    prompt: an ablation or a sweep job that evaluates a version the workspace already evaluated
    (the base, batch 1's candidate, Table 1's arms) reads its answers instead of decoding again."""
    return f"evaluate.cache_dir={repo.resolve() / 'runs' / '.cache' / 'answers'}"


def table1_sweep(repo: Path, *overrides: str) -> None:
    """A Hydra multirun of Table 1's filtered arm over `overrides` (`cift run -m`), on the
    workspace's generated data and answer cache."""
    cli = [sys.executable, "-m", "cift.cli", "run", "-m", *overrides, "profile=tiny"]
    target = ["--target", "table1@filtered", "--data", "data", "logger=none"]
    run([*cli, shared_answers(repo), *target], repo)


def test_tiny_dag_writes_every_report(tiny_dag: Path):
    check_reports(tiny_dag / "reports")
    shown = json.loads(run(["dvc", "plots", "show", "--json"], tiny_dag).stdout)
    assert not shown.get("errors"), shown["errors"]
    assert {
        "reports/plots/accuracy_per_batch.png",
        "Accuracy per batch",
        "Cost vs accuracy",
        "IFD static vs dynamic proxy",
    } <= set(shown["data"])


def test_stage_deps_cover_what_each_stage_reads_and_imports(tiny_dag: Path, tiny_dag_run: Path):
    """Every repo file a stage opened for reading, and every `cift` module it imported, lies
    under one of its declared `deps` (or is its own output, or params.yaml, which DVC tracks as
    params): editing any of them re-runs the stage. Recorded by tests/audit/sitecustomize.py."""
    from dvc.dependency.param import ParamsDependency
    from dvc.repo import Repo

    import cift

    package_root = Path(cift.__file__).resolve().parents[1]
    with Repo(str(tiny_dag)) as repo:
        stages = {
            s.name: (  # "generate@0", whatever the working directory (addressing is relative)
                [d.def_path for d in s.deps if not isinstance(d, ParamsDependency)],
                [o.def_path for o in s.outs],
            )
            for s in repo.index.stages
        }
    records = [json.loads(p.read_text()) for p in sorted((tiny_dag.parent / "audit").glob("*"))]
    built = tiny_dag_run.resolve()  # the stages ran there; this module reads a copy
    assert {r["stage"] for r in records} >= {"generate@0", "filter@1", "train@0", "report"}
    missing = []
    for record in records:
        deps, outs = stages[record["stage"]]
        used = {str(Path(m).resolve().relative_to(package_root)) for m in record["modules"]} | {
            str(Path(r).resolve().relative_to(built))
            for r in record["reads"]
            if Path(r).resolve().is_relative_to(built)
        }
        for path in sorted(used):
            if not_an_input(path) or (record["stage"].split("@")[0], path) in KNOWN_UNDECLARED:
                continue
            if not any(path == d or path.startswith(d.rstrip("/") + "/") for d in deps + outs):
                missing.append(f"{record['stage']}: {path}")
    assert not missing, "used but not declared in dvc.yaml deps:\n" + "\n".join(missing)


# Reads that are not inputs of a stage's result:
# - params.yaml (DVC tracks it as params), the package marker cift/__init__.py (a version string);
# - bytecode, logs, git and DVC's own bookkeeping that DVC and DVCLive read about the repository
#   (.gitignore files, dvc.yaml, dvc.lock, .dvcignore), DVCLive's own files;
# - runs/.cache/: answers and ranks cached by content key (version weights + sample + prompt);
# - runs/<exp>/versions/ and proxy_versions/: adapters reached through a declared pointer
#   (deployed.json, proxy.json) that carries the adapter's weight hash.
NOT_INPUTS = (".dvc/", ".git/", "logs/", "dvclive/", "runs/.cache/")
BOOKKEEPING = {"params.yaml", "cift/__init__.py", "dvc.yaml", "dvc.lock", ".dvcignore"}


def not_an_input(path: str) -> bool:
    parts = path.split("/")
    return (
        path in BOOKKEEPING
        or path.startswith(NOT_INPUTS)
        or "__pycache__" in parts
        or parts[-1] == ".gitignore"
        or (parts[0] == "runs" and len(parts) > 2 and parts[2] in ("versions", "proxy_versions"))
    )


KNOWN_UNDECLARED: set[tuple[str, str]] = set()  # (stage, path) gaps: fix, then delete


def test_every_dvc_plot_of_the_tiny_run_draws_marks(tiny_dag: Path, tmp_path: Path):
    """Rendered, not just listed: the top-level plots and the filter histograms of every batch."""
    shown = json.loads(run(["dvc", "plots", "show", "--json"], tiny_dag).stdout)
    pngs = render_plots(shown)
    vega = {n for n, e in shown["data"].items() if e and e[0]["type"] == "vega"}
    assert set(pngs) == vega and len(vega) >= 4, sorted(shown["data"])
    empty = [n for n, e in shown["data"].items() if not e and not n.startswith("dvclive/")]
    assert not empty, f"plots without data: {empty}"
    assert any(name.startswith("runs/main/b1/plots") for name in pngs), sorted(pngs)
    for i, name in enumerate(sorted(pngs)):  # kept for a look when it fails
        (tmp_path / f"{i}.png").write_bytes(pngs[name])
    print("rendered:", ", ".join(sorted(pngs)))


def test_tiny_bank_select_moe_evaluate(tiny_dag: Path):
    """The chain's adapters as a bank: K-shot selection, a MoE over them, its evaluation."""
    started = time.perf_counter()
    cli = [sys.executable, "-m", "cift.cli"]
    reg = ["--registry", "bank"]
    run([*cli, "registry", "publish", "runs/main", *reg], tiny_dag)
    kshot = "data/batches/b1/train.jsonl"  # labelled examples (val splits may hold one)
    out = run(
        [
            *cli,
            "bank",
            "select",
            "--kshot",
            kshot,
            "--k",
            "2",
            "--top",
            "2",
            *reg,
            "-S",
            "profile=tiny",
        ],
        tiny_dag,
    ).stdout
    chosen = json.loads(out.strip().splitlines()[-1])
    assert len(chosen["selected"]) == 2 and chosen["k"] == 2
    assert set(next(iter(chosen["scores"].values()))) == {
        "accuracy",
        "gold_ppl",
        "diversity",
        "combined",
    }
    run(
        [
            *cli,
            "bank",
            "moe",
            "--experts",
            ",".join(chosen["selected"]),
            "--kshot",
            kshot,
            "--k",
            "2",
            "--pool",
            "data/batches/b2/train.jsonl",
            "--epochs",
            "1",
            "--name",
            "mix",
            *reg,
            "-S",
            "profile=tiny",
        ],
        tiny_dag,
    )
    listed = json.loads(run([*cli, "bank", "list", "--json", *reg], tiny_dag).stdout)
    assert any(r["source"] == "moe" and "mix" in r["aliases"] for r in listed)
    out = run([*cli, "bank", "eval-moe", "mix", *reg, "-S", "profile=tiny"], tiny_dag).stdout
    report = json.loads(out.strip().splitlines()[-1])
    print(f"tiny bank → select → MoE → evaluate: {time.perf_counter() - started:.0f} s")
    assert set(report["splits"]) >= {"all_correct", "all_incorrect", "mixed", "best_expert"}
    assert sum(report["routing"]["expert_load"]) == pytest.approx(1.0)
    assert "bwt_moe" in report["continual"]


def test_notebook_redraws_the_tiny_reports(tiny_dag: Path):
    import nbclient
    import nbformat

    notebook = nbformat.read(Path(__file__).parents[1] / "notebooks" / "analysis.ipynb", 4)
    os.environ["CIFT_REPORTS_DIR"] = str(tiny_dag / "reports")
    try:
        nbclient.NotebookClient(notebook, timeout=120, kernel_name="python3").execute()
    finally:
        os.environ.pop("CIFT_REPORTS_DIR")
    images = [
        o
        for cell in notebook.cells
        for o in cell.get("outputs", [])
        if "image/png" in o.get("data", {})
    ]
    assert len(images) == 3


def test_tiny_experiments_line_up_and_merge(tiny_dag: Path):
    """`dvc exp show` and `dvc plots diff` over the fixture's own experiment (the tiny DAG ran
    as `dvc exp run`) and the workspace, the random baseline as a Hydra multirun job; `cift
    report --exps` merges both sources into ablations.json and the page, each dvc row read
    from its experiment's commit. The queued ablations of `make repro-ablations` (a whole
    chain each) are not run here: one costs more than a tenth of CI's 30 minutes on 2 cores."""
    started = time.perf_counter()
    check_headline_columns_line_up(tiny_dag)
    cli = [sys.executable, "-m", "cift.cli"]
    table1_sweep(tiny_dag, "experiment=random_subset")
    jobs = list((tiny_dag / "multirun").glob("*/*/0/runs/random_subset/table1/filtered.json"))
    assert len(jobs) == 1
    run([*cli, "report", "--exps"], tiny_dag)
    print(f"tiny ablations: {time.perf_counter() - started:.0f} s")
    ablations = json.loads((tiny_dag / "reports" / "ablations.json").read_text())
    assert {r["source"] for r in ablations["experiments"]} == {"dvc", "hydra"}
    assert ablations["random_baseline"]["accuracy"] is not None
    # the experiment keeps the small run metrics under runs/ (git-visible, cache: false)
    main = [r for r in ablations["experiments"] if r["source"] == "dvc"]
    assert main and main[0]["experiment"] == "main"
    assert main[0]["table1_filtered_ci"] is not None  # read from the experiment's commit
    assert "random_subset" in (tiny_dag / "reports" / "report.html").read_text()


def check_headline_columns_line_up(repo: Path) -> None:
    """`dvc exp show`: the workspace and every experiment have the same headline keys, each its
    own numbers; `dvc plots diff` across them renders."""
    show = json.loads(run(["dvc", "exp", "show", "--json"], repo).stdout)
    columns, owners = {}, {}
    for baseline in show:
        revs = [baseline] + [r for g in baseline.get("experiments") or [] for r in g["revs"]]
        for rev in revs:
            head = ((rev.get("data") or {}).get("metrics") or {}).get("reports/metrics.json") or {}
            if head.get("data"):
                name = rev.get("name") or rev["rev"]
                columns[name] = set(flatten(head["data"]))
                owners[name] = head["data"]["experiment"]
    assert "workspace" in owners and len(owners) >= 2, owners
    assert len({frozenset(keys) for keys in columns.values()}) == 1, columns
    for name, owner in owners.items():
        print(f"dvc exp show: {name} ({owner})")
    table = run(["dvc", "exp", "show", "--only-changed", "--md"], repo).stdout
    print(table)
    exps = [n for n in owners if n != "workspace"]
    shown = json.loads(run(["dvc", "plots", "diff", "--json", *exps], repo).stdout)
    figures = {"Accuracy per batch", "Cost vs accuracy", "IFD static vs dynamic proxy"}
    errors = [e for e in shown.get("errors") or [] if e.get("name") in figures]
    assert not errors, errors
    pngs = render_plots(shown, figures)
    assert set(pngs) == figures, sorted(shown["data"])
    for name in ("Accuracy per batch", "Cost vs accuracy"):  # one line or point per experiment
        revs = {r for e in shown["data"][name] for r in e.get("revisions") or []}
        assert len(revs) >= 2, (name, revs)


def flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        out |= flatten(v, f"{prefix}{k}.") if isinstance(v, dict) else {f"{prefix}{k}": v}
    return out


def test_tiny_dag_then_import_a_batch(tiny_dag: Path, tmp_path: Path):
    repo_copy = tiny_dag

    for batch in ("b1", "b2"):
        folder = repo_copy / "data" / "batches" / batch
        metrics = json.loads((folder / "generate.json").read_text())
        assert metrics["teacher"] == "kb_template"
        assert metrics["attempted"] == metrics["valid"] + metrics["rejected"] > 0
        ids = {}
        for split in ("train", "val", "test"):
            read = read_samples(folder / f"{split}.jsonl")
            assert not read.rejects, read.rejects[:3]
            ids[split] = {s["meta"]["record_id"] for s in read.accepted}
        assert ids["train"] and ids["test"]
        assert not ids["train"] & ids["test"] and not ids["train"] & ids["val"]
    assert (repo_copy / "data" / "global" / "test.jsonl").stat().st_size > 0
    probe = read_samples(repo_copy / "data" / "global" / "probe.jsonl")
    chain = (repo_copy / "data" / "heldout" / "base.jsonl").read_text().splitlines()
    assert len(probe.accepted) == 8 and not probe.rejects  # patients' own words, held out
    assert sum(json.loads(line)["split"] == "probe" for line in chain) == 8
    assert (repo_copy / "data" / "general" / "replay.jsonl").stat().st_size > 0
    check_train_evaluate_deploy(repo_copy / "runs" / "main")

    src = tmp_path / "clinic.jsonl"
    good = {
        "instruction": "Diagnose.",
        "input": "Fever and cough, call me on 07700 900123.",
        "output": "1. Fever.\n2. Cough.\n3. Short course.\nDiagnosis: Influenza\nAdvice: Rest.",
    }
    lines = [json.dumps({**good, "id": f"c{i}", "meta": {"record_id": f"c{i}"}}) for i in range(6)]
    src.write_text("\n".join([*lines, '{"instruction": "no output"}']) + "\n")
    cli = [sys.executable, "-m", "cift.cli"]
    out = run(
        [*cli, "data", "import", str(src), "--batch", "clinic", "-S", "profile=tiny"], repo_copy
    )
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert (summary["accepted"], summary["rejected"]) == (6, 1)
    imported = (repo_copy / "data" / "imported" / "clinic.jsonl").read_text()
    assert "07700" not in imported and "[PHONE]" in imported
    run([*cli, "compose", "--check", "profile=tiny"], repo_copy)
    stages = run(["dvc", "stage", "list"], repo_copy).stdout
    assert "generate@2" in stages
    assert "generate@2" in run(["dvc", "dag"], repo_copy).stdout
    run(["dvc", "repro", "generate@2"], repo_copy)
    metrics = json.loads((repo_copy / "data/batches/clinic/generate.json").read_text())
    assert metrics["teacher"] == "imported" and metrics["accepted"] == 6

"""The DAG end to end on the tiny profile, in a throwaway copy of the repo (slow)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cift.io.jsonl import read_samples
from tests.conftest import run_env

pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, timeout: int = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        args, cwd=cwd, env=run_env(), capture_output=True, text=True, timeout=timeout
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


def check_train_evaluate_deploy(runs: Path) -> None:
    """Each batch: an adapter trained from the last deployed one, a gated evaluation, a pointer."""
    for batch, prev in (("b1", "base"), ("b2", "b1")):
        train = json.loads((runs / batch / "train.json").read_text())
        assert train["n"] > 0 and train["train_tokens"] > train["supervised_tokens"] > 0
        assert (runs / "versions" / batch / "adapter_model.safetensors").is_file()
        evaluated = json.loads((runs / batch / "evaluate.json").read_text())
        for role in ("candidate", "deployed"):
            test = evaluated[role][f"test/{batch}"]
            assert 0.0 <= test["accuracy"] <= 1.0 and len(test["accuracy_ci"]) == 2
        decision = json.loads((runs / batch / "decision.json").read_text())
        assert set(decision["terms"]) == {"accuracy", "forgetting", "safety", "judge"}
        deployed = json.loads((runs / batch / "deployed.json").read_text())
        assert deployed["decision"] == ("promote" if decision["promote"] else "keep")
        previous = json.loads((runs / prev / "deployed.json").read_text())
        assert train["init_adapter"] == previous["adapter_path"]
        assert decision["deployed"]["version"] == previous["version"]
    assert "b1" in decision["terms"]["forgetting"]["batches"]  # b2 checks b1's validation split
    arms = {
        a: json.loads((runs / "table1" / f"{a}.json").read_text()) for a in ("full", "filtered")
    }
    assert arms["full"]["n"] > arms["filtered"]["n"] > 0
    assert arms["full"]["base"] == arms["filtered"]["base"]  # same cases, same cached base answers
    continual = json.loads((runs.parent.parent / "reports" / "continual.json").read_text())
    assert len(continual["R"]) == 3 and all(len(row) == 2 for row in continual["R"])
    assert continual["rows"][0] == "main/base" and 0.0 <= continual["ACC"] <= 1.0


def test_tiny_dag_then_import_a_batch(repo_copy: Path, tmp_path: Path):
    started = time.perf_counter()
    run(["dvc", "exp", "run", "-S", "profile=tiny"], repo_copy)
    print(f"dvc exp run -S profile=tiny: {time.perf_counter() - started:.0f} s")

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

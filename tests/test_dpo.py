"""Preference pairs: filtered-out valid answers vs a selected alternative or the deployed model."""

from __future__ import annotations

import json
import subprocess
import sys

from cift.data.dpo import preference_pairs
from tests.conftest import copy_repo, run_env


def s(sid: str, record: str, output: str, step: str | None = None) -> dict:
    row = {
        "id": sid,
        "instruction": f"case {record}",
        "input": "",
        "output": output,
        "meta": {"record_id": record},
    }
    return row | ({"filter": {"step": step, "reason": "x"}} if step else {})


SELECTED = [s("r1-a1", "r1", "good one"), s("r3-a2", "r3", "same text")]
REJECTED = [
    s("r1-a2", "r1", "weaker one", "select"),  # paired with the selected answer to r1
    s("r2-a1", "r2", "lonely", "select"),  # no alternative: the deployed model may win
    s("r3-a1", "r3", "same text", "ifd"),  # chosen would equal rejected: dropped, counted
    s("r4-a1", "r4", "ignored", "select"),  # deployed answer not preferred: unpaired
    {"line": 7, "filter": {"step": "read", "reason": "bad_json"}},  # not a valid sample
]


def test_pairs_come_from_alternatives_then_the_deployed_model():
    asked = []

    def prefer(samples):
        asked.extend(x["id"] for x in samples)
        return {"r2-a1": "deployed answer"}

    pairs, counts = preference_pairs(REJECTED, SELECTED, "sys", prefer)
    assert asked == ["r2-a1", "r4-a1"]
    assert [(p["id"], p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs] == [
        ("r1-a2", "good one", "weaker one"),
        ("r2-a1", "deployed answer", "lonely"),
    ]
    assert counts == {
        "filtered_valid": 4,
        "pairs": 2,
        "from_selected": 1,
        "from_deployed": 1,
        "dropped_identical": 1,
        "unpaired": 1,
    }
    prompt = pairs[0]["prompt"]
    assert [m["role"] for m in prompt] == ["system", "user"] and prompt[0]["content"] == "sys"
    assert "case r1" in prompt[1]["content"]


def test_without_the_deployed_model_only_alternatives_pair():
    pairs, counts = preference_pairs(REJECTED, SELECTED, "sys")
    assert [p["id"] for p in pairs] == ["r1-a2"] and counts["unpaired"] == 2


def test_cli_writes_trl_jsonl(tmp_path):
    repo = copy_repo(tmp_path / "repo")
    folder = repo / "runs" / "main" / "b1"
    folder.mkdir(parents=True)
    (folder / "rejected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in REJECTED))
    (folder / "selected.jsonl").write_text("".join(json.dumps(r) + "\n" for r in SELECTED))
    proc = subprocess.run(
        [sys.executable, "-m", "cift.cli", "data", "export-dpo", "b1"],
        cwd=repo,
        env=run_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    assert summary["pairs"] == 1
    rows = [json.loads(x) for x in (folder / "dpo.jsonl").read_text().splitlines()]
    assert set(rows[0]) >= {"prompt", "chosen", "rejected"}

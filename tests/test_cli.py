"""`cift data check` on the bad-input corpus, as a user runs it."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures" / "bad_inputs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text())


def cift(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "cift.cli", *args], capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_data_check_matches_expected(name: str):
    want = EXPECTED[name]
    proc = cift("data", "check", str(FIXTURES / name))
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(got) == {"file", "lines", "accepted", "rejected", "blank", "rejects"}
    assert (got["accepted"], got["rejected"], got["blank"]) == (
        want["accepted"],
        want["rejected"],
        want["blank"],
    )
    assert got["lines"] == got["accepted"] + got["rejected"] + got["blank"]
    assert sorted(r["reason"] for r in got["rejects"]) == sorted(want["reasons"])
    for r in got["rejects"]:
        assert r["line"] >= 1
        assert f"{FIXTURES / name}:{r['line']}:" in proc.stderr  # file and line, for people
    strict = cift("data", "check", "--strict", str(FIXTURES / name))
    assert strict.returncode == (1 if want["rejected"] else 0)


def test_field_is_named_in_rejects():
    proc = cift("data", "check", str(FIXTURES / "03_wrong_types.jsonl"))
    got = json.loads(proc.stdout.strip().splitlines()[-1])
    assert got["rejects"] == [
        {"line": 2, "field": "instruction", "reason": "wrong_type:instruction"}
    ]


def test_export_then_check_round_trip(tmp_path: Path):
    out = tmp_path / "sharegpt.jsonl"
    proc = cift("data", "export", str(FIXTURES / "12_unicode_mix.jsonl"), "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    back = cift("data", "check", "--format", "sharegpt", str(out))
    assert json.loads(back.stdout.strip().splitlines()[-1])["accepted"] == 3


@pytest.mark.parametrize(
    ("argv", "target"),
    [
        (["compose", "--check", "-S", "profile=tiny", "-S", "seed=1"], "check_params"),
        (["compose", "--check", "profile=tiny", "seed=1"], "check_params"),  # positional alias
        (["score", "ifd", "--in", "a", "--out", "b", "-S", "profile=tiny", "seed=1"], "score"),
    ],
)
def test_compose_and_score_ifd_take_overrides_with_S(argv, target, monkeypatch):
    import cift.config
    import cift.scoring.commands
    from cift.cli import build_parser

    seen = {}
    if target == "check_params":
        monkeypatch.setattr(cift.config, "check_params", lambda o: seen.setdefault("o", o) and "")
    else:
        monkeypatch.setattr(
            cift.scoring.commands, "score_ifd_command", lambda i, o, ov: seen.setdefault("o", ov)
        )
    args = build_parser().parse_args(argv)
    args.func(args)
    assert sorted(seen["o"]) == ["profile=tiny", "seed=1"]

"""Composition: params.yaml equals conf/, every option composes, pluggable parts instantiate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra.utils import instantiate

from cift.config import check_params, compose_params
from tests.conftest import ROOT, compose, run_env

GROUPS = sorted(p.name for p in (ROOT / "conf").iterdir() if p.is_dir())
OPTIONS = [(g, p.stem) for g in GROUPS for p in sorted((ROOT / "conf" / g).glob("*.yaml"))]
PROFILES = [p.stem for p in sorted((ROOT / "conf" / "profile").glob("*.yaml"))]
EXPERIMENTS = [None] + [p.stem for p in sorted((ROOT / "conf" / "experiment").glob("*.yaml"))]


def test_committed_params_match_conf():
    assert check_params(root=ROOT) == "", "run `cift compose` and commit params.yaml"


def test_compose_check_cli_reports_difference_and_errors(repo_copy: Path):
    cli = [sys.executable, "-m", "cift.cli", "compose"]
    ok = subprocess.run([*cli, "--check"], cwd=repo_copy, env=run_env(), capture_output=True)
    assert ok.returncode == 0, ok.stderr
    params = repo_copy / "params.yaml"
    params.write_text(params.read_text().replace("seed: 1234", "seed: 99"))
    diff = subprocess.run([*cli, "--check"], cwd=repo_copy, env=run_env(), capture_output=True)
    assert diff.returncode == 1
    assert b"-seed: 99" in diff.stdout and b"+seed: 1234" in diff.stdout
    bad = subprocess.run(
        [*cli, "--check", "model=nope"], cwd=repo_copy, env=run_env(), capture_output=True
    )
    assert bad.returncode == 2 and b"composition failed" in bad.stderr


def test_compose_writes_params(repo_copy: Path):
    compose_params(["profile=tiny"], root=repo_copy)
    params = yaml.safe_load((repo_copy / "params.yaml").read_text())
    assert params["teacher"]["name"] == "kb_template"
    assert params["data"]["name"] == "tiny"
    assert "hydra" not in params


def test_conf_has_no_run_time_interpolations():
    for path in (ROOT / "conf").rglob("*.yaml"):
        text = path.read_text()
        for resolver in ("now", "hydra", "oc.env"):
            bad = "${" + resolver + ":"
            assert bad not in text, f"{path}: {bad} would be baked into params.yaml"


@pytest.mark.parametrize("profile", PROFILES)
@pytest.mark.parametrize("experiment", EXPERIMENTS)
def test_every_experiment_profile_pair_composes(profile: str, experiment: str | None):
    overrides = [f"profile={profile}"] + ([f"experiment={experiment}"] if experiment else [])
    cfg = compose(overrides)
    assert cfg.profile_name == profile
    assert cfg.data.batches, "a profile never empties data.batches"
    names = [b.name for b in cfg.data.batches]
    assert len(set(names)) == len(names)


@pytest.mark.parametrize(("group", "option"), OPTIONS)
def test_every_option_composes_and_builds(group: str, option: str):
    cfg = compose([f"{group}={option}"] if group != "profile" else [f"profile={option}"])
    node = cfg.get(group)
    if group in ("profile", "experiment") or node is None:
        return
    if "_target_" not in node:  # a group whose pluggable part sits one level down
        node = next((v for v in node.values() if hasattr(v, "get") and "_target_" in v), None)
        if node is None:
            return
    if group == "trainer" and cfg.trainer.accelerator != "cpu":
        # GPU strategies: the target and its arguments resolve, without building on this machine
        partial = instantiate(node, _partial_=True, _recursive_=False)
        assert callable(partial)
        return
    if group == "trainer":  # `auto` precision is resolved for the CPU as train_adapter does
        from cift.models.loading import resolve_precision

        node.precision = resolve_precision(node.precision, node.accelerator)
    # model specs are cheap to build (weights load only in .load(); Qwen needs a model cache)
    built = instantiate(node)
    assert built is not None


def test_tiny_uses_template_teacher_and_small_mixes_in_an_llm():
    assert compose(["profile=tiny"]).teacher.name == "kb_template"
    small = compose([])
    assert small.profile_name == "small" and small.teacher.name == "mixed"
    local = small.teacher.members.local
    assert local.backend._target_.endswith("LocalTeacher") and 0 < local.share < 1


def test_proxy_model_can_differ_from_deployed_model():
    cfg = compose(["proxy.model={_target_:cift.models.ModelSpec,name:other,source:tiny_random}"])
    assert cfg.proxy.model.name == "other" and cfg.model.name == "smollm2_135m"
    assert compose(["profile=paper"]).proxy.model.name == "qwen2_5_0_5b_instruct"


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda p: p["data"].pop("kb"), "data.kb: missing"),
        (lambda p: p["generate"].update(min_steps="three"), "generate.min_steps: expected int"),
        (lambda p: p["data"]["batches"][1].pop("name"), "data.batches[1].name: missing"),
        (lambda p: p["data"]["batches"][1].update(prev="nope"), "data.batches[1].prev"),
        (lambda p: p["data"]["batches"][0].update(source="x.jsonl"), "data.batches[0].source"),
        (lambda p: p["data"]["batches"][0].update(name="../x"), "data.batches[0].name"),
        (lambda p: p["data"]["batches"][1].update(records=0), "data.batches[1].records: expected"),
        (lambda p: p["data"].update(fractions=[0.5, 0.5, 0.5]), "data.fractions"),
        (lambda p: p["gate"].update(metric="bleu"), "gate.metric: expected ranked, generated or"),
        (lambda p: p["gate"].update(forgetting="once"), "gate.forgetting: expected pooled"),
        (lambda p: p["gate"].update(generated_cases="all"), "gate.generated_cases: expected"),
        (lambda p: p["gate"].update(margin=-0.1), "gate.margin"),
        (lambda p: p["gate"].pop("margin"), "gate.margin: missing"),
        (
            lambda p: p["teacher"]["members"]["local"].update(decoding="fast"),
            "teacher.members.local.decoding: expected single or staged",
        ),
        (
            lambda p: p["teacher"]["members"]["kb_template"].pop("backend"),
            "teacher.members.kb_template.backend._target_: missing",
        ),
        (
            lambda p: p["teacher"]["members"]["local"].update(share=0),
            "teacher.members.local.share: expected a number > 0",
        ),
        (lambda p: p["teacher"].update(members=None, decoding="x"), "teacher.decoding: expected"),
    ],
)
def test_malformed_params_name_file_and_key(tmp_path: Path, edit, message: str):
    from cift.config import load_params
    from cift.params_schema import ConfigError

    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    edit(params)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(params))
    with pytest.raises(ConfigError) as err:
        load_params(path)
    assert str(path) in str(err.value) and message in str(err.value)


def test_a_queued_experiment_reads_its_own_params(tmp_path, monkeypatch):
    """`dvc exp run --queue` runs stages in a temporary copy with DVC_ROOT naming the original
    workspace: the copy's params.yaml is the experiment's and must win."""
    from cift.config import repo_root

    original, copy = tmp_path / "workspace", tmp_path / "workspace" / ".dvc" / "tmp" / "exp"
    for root in (original, copy):
        (root / "conf").mkdir(parents=True)
        (root / "conf" / "config.yaml").write_text("{}\n")
    monkeypatch.setenv("DVC_ROOT", str(original))
    monkeypatch.chdir(copy)
    assert repo_root() == copy.resolve()
    monkeypatch.chdir(tmp_path)  # outside any repo: DVC_ROOT is the fallback
    assert repo_root() == original

"""Registry mirrors: git tags in GTO's format (annotated, one commit per version, never pushed),
W&B aliases in an offline run, off by default, and a mirror failure never hurting the registry."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

import cift.registry.mirrors as mirrors
from cift.registry import BASE_ID, InvalidName, Registry
from cift.registry.mirrors import gto_stage, gto_version, run_mirrors
from tests.test_registry import cli, make_adapter


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """As in test_registry: fsync only matters for power loss and costs ~5 ms a call here."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


def git(repo: Path, *args: str) -> str:
    out = subprocess.run(
        ["git", "-C", str(repo), *args], capture_output=True, text=True, check=True, timeout=30
    )
    return out.stdout.strip()


def tags(repo: Path) -> set[str]:
    return set(git(repo, "tag", "-l").split())


@pytest.fixture
def repo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A git repository with one commit and its own identity (no signing)."""
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    git(repo, "init", "-q")
    for key, value in [
        ("user.name", "cift test"),
        ("user.email", "test@example.invalid"),
        ("commit.gpgsign", "false"),
        ("tag.gpgsign", "false"),
    ]:
        git(repo, "config", key, value)
    (repo / ".gitignore").write_text("registry/\nadapters/\n")
    git(repo, "add", ".gitignore")
    git(repo, "commit", "-q", "-m", "init")
    return repo


@pytest.fixture
def reg(repo: Path) -> Registry:
    return Registry(repo / "registry")


def adapters(repo: Path, n: int) -> list[Path]:
    return [make_adapter(repo / "adapters" / f"a{i}", float(i + 1)) for i in range(n)]


# -- off by default ------------------------------------------------------------------------------


def test_mirrors_are_off_by_default_and_create_nothing(reg: Registry, repo: Path):
    assert reg.load()["options"]["mirrors"] == {
        "git_tags": False,
        "wandb": False,
        "git_artifact": "model",
        "wandb_project": "cift",
        "wandb_artifact": "cift-model",
        "wandb_dir": "logs/wandb",
    }
    a, b = (reg.register(p) for p in adapters(repo, 2))
    reg.promote(a)
    reg.promote(b)
    reg.rollback()
    assert tags(repo) == set() and reg.mirror_reports == []
    assert not (reg.root / mirrors.MIRROR_LOG).exists()
    assert not (repo / "logs").exists()


def test_an_older_registry_without_mirror_options_loads_with_the_defaults(reg: Registry):
    reg.root.mkdir(parents=True)
    old = {"format": 1, "revision": 3, "next_id": 1, "versions": {}, "aliases": {}}
    reg.state_path.write_text(json.dumps(old | {"options": {"proxy_follows_production": True}}))
    options = reg.load()["options"]
    assert options["proxy_follows_production"] is True and options["mirrors"]["git_tags"] is False
    reg.state_path.write_text(json.dumps(old | {"options": {"mirrors": {"git_tags": True}}}))
    options = reg.load()["options"]
    assert options["proxy_follows_production"] is False
    assert options["mirrors"]["git_tags"] is True and options["mirrors"]["git_artifact"] == "model"
    assert reg.set_mirrors(wandb=True)["git_tags"] is True  # merged, not replaced


def test_mirror_options_are_validated(reg: Registry):
    for bad in [
        {"git_tags": "yes"},
        {"nope": True},
        {"git_artifact": "a b"},
        {"git_artifact": "../x"},
        {"git_artifact": "model.v2"},  # an alias, but not a GTO name
        {"git_artifact": "v0003"},
        {"wandb_project": "a/b"},
        {"wandb_dir": ""},
    ]:
        with pytest.raises(InvalidName):
            reg.set_mirrors(**bad)
    with pytest.raises(InvalidName):
        reg.set_options(mirrors="on")
    with pytest.raises(InvalidName):
        reg.set_options(proxy_follows_production="yes")
    assert not reg.state_path.exists()  # nothing refused was written
    assert reg.set_mirrors(git_tags=True, git_artifact="cift-model")["git_artifact"] == "cift-model"


def test_gto_names():
    assert gto_version("v0003") == "v0.0.3" and gto_version(BASE_ID) == "v0.0.0"
    assert gto_version("v12345") == "v0.0.12345"
    assert gto_stage("production") == "prod" and gto_stage("candidate") == "candidate"
    assert gto_stage("my.alias") is None and gto_stage("canary_2") == "canary_2"


# -- git tags ------------------------------------------------------------------------------------


def tag_commit(repo: Path, name: str) -> str:
    return git(repo, "rev-parse", f"{name}^{{commit}}")


def test_register_promote_rollback_create_annotated_gto_tags(reg: Registry, repo: Path):
    head, status = git(repo, "rev-parse", "HEAD"), git(repo, "status", "--porcelain")
    reg.set_mirrors(git_tags=True)
    a, b = (reg.register(p) for p in adapters(repo, 2))
    assert tags(repo) == {"model@v0.0.1", "model@v0.0.2"}
    reg.promote(a, reason="first")
    reg.promote(b)
    assert reg.rollback() == a
    assert tags(repo) == {
        "model@v0.0.1",
        "model@v0.0.2",
        "model#prod#1",  # production -> v0001
        "model#prod!#2",  # production leaves v0001 …
        "model#prod#3",  # … for v0002
        "model#prod!#4",  # rollback: leaves v0002 …
        "model#prod#5",  # … back to v0001
    }
    for name in tags(repo):
        assert git(repo, "cat-file", "-t", name) == "tag", name  # annotated
    # one commit per version: the tree of the adapters' git_rev, that revision as parent
    one, two = tag_commit(repo, "model@v0.0.1"), tag_commit(repo, "model@v0.0.2")
    assert one != two
    for commit in (one, two):
        assert git(repo, "rev-parse", f"{commit}^") == head
        assert git(repo, "rev-parse", f"{commit}^{{tree}}") == git(repo, "rev-parse", "HEAD^{tree}")
    assert {tag_commit(repo, t) for t in ("model#prod#1", "model#prod!#4", "model#prod#5")} == {
        one,
        two,
    }
    assert tag_commit(repo, "model#prod#5") == one and tag_commit(repo, "model#prod!#4") == two
    message = git(repo, "tag", "-l", "--format=%(contents)", "model#prod#1")
    assert "production -> v0001" in message and "reason: first" in message
    # nothing else in the repository moved, and nothing was pushed (there is no remote)
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == status
    assert git(repo, "remote") == ""
    # stage tags are in order for GTO, which sorts by tag time
    dates = [
        int(git(repo, "tag", "-l", "--format=%(taggerdate:unix)", f"model#prod{s}#{n}"))
        for s, n in [("", 1), ("!", 2), ("", 3), ("!", 4), ("", 5)]
    ]
    assert dates == sorted(dates) and len(set(dates)) == len(dates)
    log = [json.loads(line) for line in (reg.root / mirrors.MIRROR_LOG).read_text().splitlines()]
    assert len(log) == 5 and log[-1]["git"]["created"] == ["model#prod!#4", "model#prod#5"]
    assert all(not report["warnings"] for report in reg.mirror_reports)


def test_git_tags_are_idempotent_and_leave_existing_tags_alone(reg: Registry, repo: Path):
    reg.set_mirrors(git_tags=True)
    paths = adapters(repo, 3)
    a, b = reg.register(paths[0]), reg.register(paths[1])
    reg.promote(a)
    reg.promote(b)
    before = {t: git(repo, "rev-parse", t) for t in tags(repo)}
    report = run_mirrors(reg, reg.history())  # every write mirrored once more
    assert report["git"]["created"] == [] and not report["warnings"]
    assert reg.register(paths[1]) == b and reg.promote(b) == b  # nothing new: nothing mirrored
    assert {t: git(repo, "rev-parse", t) for t in tags(repo)} == before
    git(repo, "tag", "model@v0.0.3")  # someone else's (lightweight) tag with the next name
    c = reg.register(paths[2])
    assert c == "v0003" and git(repo, "cat-file", "-t", "model@v0.0.3") == "commit"
    assert reg.mirror_reports[-1]["git"]["existing"] == ["model@v0.0.3"]


def test_every_alias_move_is_mirrored(reg: Registry, repo: Path):
    reg.set_options(proxy_follows_production=True)
    reg.set_mirrors(git_tags=True, git_artifact="qa-model")
    a, b = (reg.register(p) for p in adapters(repo, 2))
    reg.promote(a)  # proxy follows production: its own stage
    reg.tag(b, "candidate")
    reg.move_alias("candidate", a, "publish", "last candidate")  # what publish does
    reg.tag(b, "my.alias")  # a valid alias, not a GTO stage: reported, skipped
    reg.rollback(to="base")  # the base model is v0.0.0
    assert tags(repo) == {
        "qa-model@v0.0.1",
        "qa-model@v0.0.2",
        "qa-model@v0.0.0",
        "qa-model#prod#1",
        "qa-model#proxy#2",
        "qa-model#candidate#3",
        "qa-model#candidate!#4",
        "qa-model#candidate#5",
        "qa-model#prod!#6",
        "qa-model#prod#7",
        "qa-model#proxy!#8",
        "qa-model#proxy#9",
    }
    assert tag_commit(repo, "qa-model#prod#7") == tag_commit(repo, "qa-model@v0.0.0")
    skipped = reg.mirror_reports[-2]
    assert skipped["git"]["created"] == [] and "my.alias" in skipped["warnings"][0]


def test_gto_reads_the_tags_back(reg: Registry, repo: Path):
    gto_api = pytest.importorskip("gto.api")
    from gto.tag import parse_name

    reg.set_mirrors(git_tags=True)
    a, b = (reg.register(p) for p in adapters(repo, 2))  # same git_rev: GTO needs two commits
    reg.promote(a)
    reg.promote(b)
    reg.rollback()
    for name in tags(repo):
        assert parse_name(name)["name"] == "model", name
    stage = gto_api.find_versions_in_stage(str(repo), "model", "prod")
    assert [s.version for s in stage] == ["v0.0.1"]
    versions = {v["version"] for v in gto_api.show(str(repo), "model")}
    assert versions == {"v0.0.1", "v0.0.2"}


def test_outside_git_the_registry_works_and_reports_the_skip(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
):
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path))
    reg = Registry(tmp_path / "registry")
    reg.set_mirrors(git_tags=True)
    a = reg.register(make_adapter(tmp_path / "a", 1.0))
    assert reg.promote(a) == a and reg.aliases()["production"] == a
    assert all(r["git"].get("skipped") for r in reg.mirror_reports)
    assert "not inside a git repository" in reg.mirror_reports[-1]["warnings"][0]
    capsys.readouterr()
    assert cli("registry", "tag", a, "canary", "--registry", str(reg.root)) == 0
    err = capsys.readouterr().err
    assert "cift registry tag: warning: git tags skipped" in err


def test_a_failing_mirror_never_breaks_or_rolls_back_the_registry(
    reg: Registry, repo: Path, monkeypatch: pytest.MonkeyPatch
):
    reg.set_mirrors(git_tags=True, wandb=True)

    def boom(*_args, **_kwargs):
        raise RuntimeError("mirror down")

    monkeypatch.setattr(mirrors, "mirror_git", boom)
    monkeypatch.setattr(mirrors, "mirror_wandb", boom)
    (a,) = (reg.register(p) for p in adapters(repo, 1))
    assert reg.promote(a) == a and reg.aliases()["production"] == a
    assert [e["action"] for e in reg.history()] == ["register", "promote"]
    warnings = reg.mirror_reports[-1]["warnings"]
    assert warnings == [
        "git tags mirror failed: RuntimeError: mirror down",
        "wandb mirror failed: RuntimeError: mirror down",
    ]
    monkeypatch.setattr(mirrors, "run_mirrors", boom)  # even a bug in the mirror module itself
    assert reg.rollback() == BASE_ID and reg.aliases()["production"] == BASE_ID
    assert "mirror down" in reg.mirror_reports[-1]["warnings"][0]


# -- CLI -----------------------------------------------------------------------------------------


def test_cli_mirror_sets_and_prints_the_options(reg: Registry, capsys: pytest.CaptureFixture):
    where = ["--registry", str(reg.root)]
    capsys.readouterr()
    assert cli("registry", "mirror", "--git-tags", "on", "--git-artifact", "clf", *where) == 0
    options = json.loads(capsys.readouterr().out)
    assert options["git_tags"] is True and options["wandb"] is False
    assert options["git_artifact"] == "clf"
    assert cli("registry", "mirror", "--wandb", "on", "--git-tags", "off", *where) == 0
    options = json.loads(capsys.readouterr().out)
    assert (options["git_tags"], options["wandb"], options["git_artifact"]) == (False, True, "clf")
    assert cli("registry", "mirror", *where) == 0  # no flag: only prints
    assert json.loads(capsys.readouterr().out) == options
    assert cli("registry", "mirror", "--git-artifact", "../x", *where) == 1
    assert "invalid" in capsys.readouterr().err
    assert cli("registry", "mirror", "--git-tags", "maybe", *where) == 2
    assert reg.load()["options"]["mirrors"] == options


# -- W&B -----------------------------------------------------------------------------------------


def test_wandb_offline_run_logs_the_artifact_with_its_aliases(
    reg: Registry, repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    folder = tmp_path / "wb"
    reg.set_mirrors(wandb=True, wandb_dir=str(folder), wandb_project="cift-test")
    (a,) = (reg.register(p) for p in adapters(repo, 1))
    assert reg.mirror_reports[-1].get("wandb") is None  # a registration moves no alias
    reg.promote(a)
    report = reg.mirror_reports[-1]
    assert not report["warnings"], report
    result = report["wandb"]
    assert result["mode"] == "offline"
    assert result["logged"] == [{"version": a, "aliases": ["production", "cift-v0001"]}]
    run_dir = Path(result["run_dir"])
    assert run_dir.is_dir() and run_dir.parent == folder / "wandb"
    assert run_dir.name.startswith("offline-run-")
    (records,) = run_dir.glob("run-*.wandb")  # the run's log, to `wandb sync` later
    data = records.read_bytes()
    for needle in (b"cift-model", b"production", b"cift-v0001", b"adapter_model.safetensors"):
        assert needle in data, needle
    assert tags(repo) == set()  # git tags stay off

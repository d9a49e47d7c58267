"""`cift run`: dvc.yaml's stages expanded with a job's config and put in dependency order."""

from __future__ import annotations

from pathlib import Path

import pytest

from cift.run import Stage, expand_stages, order
from tests.conftest import ROOT, compose


def test_stages_come_from_dvc_yaml_in_dependency_order():
    stages = order(expand_stages(ROOT / "dvc.yaml", compose(["profile=tiny"])))
    names = [s.name for s in stages]
    assert set(names) >= {"generate@0", "generate@1", "table1@full", "continual", "report"}
    position = {n: i for i, n in enumerate(names)}
    for before, after in [
        ("generate@0", "filter@0"),
        ("filter@0", "train@0"),
        ("deploy@0", "proxy_update@0"),
        ("proxy_update@0", "filter@1"),
        ("deploy@0", "train@1"),
        ("filter@0", "table1@filtered"),
        ("deploy@1", "continual"),
        ("continual", "report"),
    ]:
        assert position[before] < position[after], (before, after)
    train = next(s for s in stages if s.name == "train@1")
    assert train.cmd == "python stages/train.py b2"
    assert "runs/main/b1/deployed.json" in train.deps  # ${item.prev} resolved


def test_targets_keep_only_what_they_need():
    stages = expand_stages(ROOT / "dvc.yaml", compose(["profile=tiny"]))
    names = [s.name for s in order(stages, ["table1@filtered"])]
    assert names[-1] == "table1@filtered" and "filter@0" in names and "train@0" not in names
    with pytest.raises(KeyError, match="no stage named"):
        order(stages, ["nope"])


def test_a_cycle_is_reported(tmp_path: Path):
    a = Stage("a", "python a.py", deps=["y"], outs=["x"])
    b = Stage("b", "python b.py", deps=["x"], outs=["y"])
    with pytest.raises(ValueError, match="cycle"):
        order([a, b])


def test_data_stages_are_skipped_when_the_shared_data_exists(tmp_path, monkeypatch):
    """--data: a data stage whose outputs all exist in the shared folder does not run."""
    import cift.run as run_module

    (tmp_path / "stages").mkdir()
    (tmp_path / "stages" / "make.py").write_text(
        "import sys, pathlib\npathlib.Path(sys.argv[1]).write_text('x')\n"
    )
    (tmp_path / "dvc.yaml").write_text(
        "stages:\n"
        "  gen:\n    cmd: python stages/make.py ran-gen\n    outs: [data/a.txt]\n"
        "  use:\n    cmd: python stages/make.py ran-use\n    deps: [data/a.txt]\n"
        "    outs: [out.txt]\n"
    )
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "a.txt").write_text("generated earlier")
    cfg = run_module.OmegaConf.create({"paths": {"data": "data"}})
    seconds = run_module.run_stages(cfg, tmp_path / "job", tmp_path, data=shared)
    assert list(seconds) == ["use"]
    assert (tmp_path / "job" / "ran-use").is_file() and not (tmp_path / "job" / "ran-gen").exists()
    assert "paths" in (tmp_path / "job" / "params.yaml").read_text()

"""Every selector and teacher backend shipped in conf/ builds from its config file alone.

Adding a selector or a teacher backend is one module plus one config file that names it by
`_target_` (README, "Extending cift"); these tests pick up a new config file by themselves, so a
`_target_` that names nothing, or keys its class does not take, fail here before any DAG runs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from omegaconf import OmegaConf

from tests.conftest import compose

ROOT = Path(__file__).resolve().parents[1]
SELECTORS = sorted(p.stem for p in (ROOT / "conf" / "filter").glob("*.yaml"))
TEACHERS = sorted(p.stem for p in (ROOT / "conf" / "teacher").glob("*.yaml"))


@pytest.mark.parametrize("name", SELECTORS)
def test_every_selector_config_builds_its_steps(name: str):
    from cift.filters.pipeline import build_steps

    cfg = OmegaConf.load(ROOT / "conf" / "filter" / f"{name}.yaml")
    steps = build_steps(cfg)
    assert cfg.name == name, f"conf/filter/{name}.yaml: name: {cfg.name!r}"
    assert [s.name for s in steps] == list(cfg.steps)
    assert all(callable(getattr(s, "apply", None)) for s in steps)
    for step in cfg.steps:  # found by _target_, not by a list of names kept in the pipeline
        assert "_target_" in cfg[step], f"conf/filter/{name}.yaml: {step}: no _target_"


@pytest.mark.parametrize("name", TEACHERS)
def test_every_teacher_config_builds_its_backend(name: str):
    from hydra.utils import instantiate

    from cift.generate.teachers.mix import member_configs
    from cift.params_schema import validate_params

    cfg = compose([f"teacher={name}", "profile=tiny"])
    validate_params(cfg)
    assert cfg.teacher.name == name
    for member, mcfg in member_configs(cfg.teacher).items():  # a mix: each member on its own
        teacher = instantiate(mcfg.backend)
        assert mcfg.name == member and teacher.name == member
        assert mcfg.decoding in ("single", "staged")
        assert callable(getattr(teacher, "generate", None))

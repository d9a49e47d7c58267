"""Composition of `conf/` into `params.yaml` (through DVC's own Hydra code) and its check."""

from __future__ import annotations

import difflib
import os
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import yaml
from omegaconf import DictConfig, OmegaConf

if TYPE_CHECKING:
    from cift.kb import KnowledgeBase

PARAMS = "params.yaml"
CONF_DIR = "conf"
CONFIG_NAME = "config"


def repo_root(start: Path | None = None) -> Path:
    """The nearest folder at or above the working directory holding `conf/`, else DVC_ROOT.

    The working copy comes first: a queued `dvc exp run` executes in a temporary copy of the
    repo while DVC_ROOT still names the original workspace, whose params.yaml is not the
    experiment's."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / CONF_DIR / f"{CONFIG_NAME}.yaml").is_file():
            return folder
    if os.environ.get("DVC_ROOT"):
        return Path(os.environ["DVC_ROOT"])
    raise FileNotFoundError(f"no {CONF_DIR}/{CONFIG_NAME}.yaml in {here} or its parents")


def compose_to(output: Path, overrides: list[str], root: Path) -> None:
    """Compose exactly as `dvc exp run` does (dvc.utils.hydra), written atomically to `output`."""
    from dvc.utils.hydra import compose_and_dump

    fd, tmp = tempfile.mkstemp(prefix=".params.", suffix=".yaml", dir=output.parent)
    os.close(fd)
    try:
        compose_and_dump(
            tmp, str((root / CONF_DIR).resolve()), None, CONFIG_NAME, str(root), overrides
        )
        os.replace(tmp, output)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def compose_config(overrides: list[str] | None = None, root: Path | None = None) -> DictConfig:
    """conf/ composed in memory with Hydra overrides and resolved (no params.yaml written)."""
    from hydra import compose, initialize_config_dir

    conf = ((root or repo_root()) / CONF_DIR).resolve()
    with initialize_config_dir(str(conf), version_base=None):
        cfg = compose(CONFIG_NAME, overrides=list(overrides or []))
    OmegaConf.resolve(cfg)
    return cfg


def compose_params(overrides: list[str] | None = None, root: Path | None = None) -> Path:
    """Write `params.yaml` at the repo root from `conf/` plus Hydra overrides."""
    root = root or repo_root()
    out = root / PARAMS
    compose_to(out, list(overrides or []), root)
    return out


def check_params(overrides: list[str] | None = None, root: Path | None = None) -> str:
    """Unified diff between the committed params.yaml and the composition ('' when equal)."""
    root = root or repo_root()
    committed = root / PARAMS
    with tempfile.TemporaryDirectory() as tmp:
        fresh = Path(tmp) / PARAMS
        compose_to(fresh, list(overrides or []), root)
        want = yaml.safe_load(fresh.read_text())
    have = yaml.safe_load(committed.read_text()) if committed.is_file() else None
    if have == want:
        return ""
    dump = lambda d: yaml.safe_dump(d, sort_keys=True).splitlines(keepends=True)  # noqa: E731
    return "".join(
        difflib.unified_diff(dump(have), dump(want), f"{PARAMS} (committed)", "conf/ (composed)")
    )


def load_params(path: str | Path | None = None) -> DictConfig:
    """The resolved run config a stage works from (params.yaml, already composed by DVC)."""
    from cift.params_schema import validate_params

    path = path or os.environ.get("CIFT_PARAMS")  # `cift run` jobs keep their own params.yaml
    path = Path(path) if path else repo_root() / PARAMS
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; run `cift compose` first")
    cfg = OmegaConf.load(path)
    validate_params(cfg, path.name if path.parent == Path.cwd() else path)
    return cfg


def run_config(overrides: list[str] | None = None) -> DictConfig:
    """What a command works from: params.yaml, or conf/ composed with `-S` overrides."""
    return compose_config(overrides) if overrides else load_params()


def domain_kb(cfg: DictConfig) -> KnowledgeBase:
    """The configured KB, cut to its first `data.n_conditions` conditions when set."""
    from cift.kb import load_kb

    kb = load_kb(cfg.data.kb)
    n = cfg.data.get("n_conditions")
    return kb.subset(kb.names[:n]) if n else kb


def batch_spec(cfg: DictConfig, name: str) -> dict:
    """The `data.batches` entry named `name`, resolved; a KeyError naming the known ones."""
    for spec in cfg.data.batches:
        if spec.name == name:
            return OmegaConf.to_container(spec, resolve=True)
    known = ", ".join(b.name for b in cfg.data.batches)
    raise KeyError(f"params.yaml: data.batches: no batch named {name!r} (known: {known})")


def batches_through(cfg: DictConfig, name: str) -> list[str]:
    """Batch names from the first up to and including `name`, in arrival order."""
    names = [b.name for b in cfg.data.batches]
    batch_spec(cfg, name)  # a clear error for an unknown name
    return names[: names.index(name) + 1]

"""`cift run`: the DVC stages, in DAG order, in-process, as a Hydra app (so `-m` sweeps work).

Each Hydra job gets its own folder (multirun/<date>/<time>/<n>/ or outputs/...), its own
params.yaml (the job's composed config) and the same data/, runs/ and reports/ layout as a DVC
workspace. The stage list comes from dvc.yaml itself (foreach expanded with the job's config),
ordered by which stage's outputs another depends on, so nothing here repeats the DAG.
`--data DIR` reuses a workspace's generated data: stages whose outputs all lie under it and
exist are skipped (the sweep must not change data parameters).
"""

from __future__ import annotations

import contextlib
import os
import runpy
import shlex
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf


@dataclass
class Stage:
    name: str
    cmd: str
    deps: list[str] = field(default_factory=list)
    outs: list[str] = field(default_factory=list)


def _resolve(value: Any, ctx: dict) -> Any:
    """DVC's ${...} interpolation, done by OmegaConf with the job config + item/key in scope."""
    if isinstance(value, str) and "${" in value:
        return OmegaConf.create({**ctx, "__v": value})["__v"]
    return value


def _paths(entries: list, ctx: dict) -> list[str]:
    out = []
    for entry in entries or []:
        name = next(iter(entry)) if isinstance(entry, dict) else entry
        out.append(str(_resolve(name, ctx)))
    return out


def expand_stages(dvc_yaml: Path, cfg: DictConfig) -> list[Stage]:
    """dvc.yaml's stages, `foreach` expanded with the job's config, in file order."""
    spec = yaml.safe_load(dvc_yaml.read_text(encoding="utf-8"))["stages"]
    base = OmegaConf.to_container(cfg, resolve=True)
    stages = []
    for name, body in spec.items():
        if "foreach" not in body:
            items = [(None, None, body)]
        else:
            each = _resolve(body["foreach"], base)
            if isinstance(each, str | bytes) or each is None:
                raise ValueError(f"dvc.yaml: {name}: foreach must be a list or a mapping")
            each = OmegaConf.to_container(each) if not isinstance(each, list | dict) else each
            pairs = each.items() if isinstance(each, dict) else enumerate(each)
            items = [(key, item, body["do"]) for key, item in pairs]
        for key, item, do in items:
            ctx = {**base, "item": item, "key": key}
            label = name if key is None else f"{name}@{key}"  # DVC's own names: generate@0
            outs = [p for group in ("outs", "metrics", "plots") for p in _paths(do.get(group), ctx)]
            cmd = str(_resolve(do["cmd"], ctx))
            stages.append(Stage(label, cmd, _paths(do.get("deps"), ctx), outs))
    return stages


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def order(stages: list[Stage], targets: list[str] | None = None) -> list[Stage]:
    """Stages before those that depend on their outputs (file order breaks ties); with
    `targets`, only the targets and what they need."""
    needs = {
        s.name: {
            o.name
            for o in stages
            if o is not s
            and any(_under(d, out) or _under(out, d) for d in s.deps for out in o.outs)
        }
        for s in stages
    }
    if targets:
        unknown = [t for t in targets if t not in needs]
        if unknown:
            raise KeyError(f"dvc.yaml: no stage named {unknown}; stages: {sorted(needs)}")
        keep, todo = set(), list(targets)
        while todo:
            name = todo.pop()
            if name not in keep:
                keep.add(name)
                todo += needs[name]
        stages = [s for s in stages if s.name in keep]
    done: list[Stage] = []
    pending = list(stages)
    while pending:
        ready = next(
            (s for s in pending if needs[s.name] & {p.name for p in pending} == set()), None
        )
        if ready is None:
            raise ValueError(f"dvc.yaml: a cycle among {[s.name for s in pending]}")
        done.append(ready)
        pending.remove(ready)
    return done


@contextlib.contextmanager
def _in_job(folder: Path, root: Path) -> Iterator[None]:
    """cwd = the job folder; stages read its params.yaml (CIFT_PARAMS) and the repo's code."""
    saved = Path.cwd(), sys.argv, os.environ.get("CIFT_PARAMS"), os.environ.get("DVC_ROOT")
    os.chdir(folder)
    os.environ["CIFT_PARAMS"] = str(folder / "params.yaml")
    os.environ["DVC_ROOT"] = str(folder)  # W&B's logs/ and every relative path stay in the job
    try:
        yield
    finally:
        os.chdir(saved[0])
        sys.argv = saved[1]
        for key, value in (("CIFT_PARAMS", saved[2]), ("DVC_ROOT", saved[3])):
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def run_stages(
    cfg: DictConfig,
    folder: Path,
    root: Path,
    targets: list[str] | None = None,
    data: Path | None = None,
) -> dict[str, float]:
    """Run the DAG (or what `targets` need) for one composed config in `folder`; returns the
    seconds each stage took. Stages run as DVC would run them (`python stages/x.py args`)."""
    folder.mkdir(parents=True, exist_ok=True)
    prefix = str(cfg.paths.data)  # dvc.yaml's data outputs are written under this prefix
    if data is not None:
        data = data.resolve()
        cfg = OmegaConf.merge(cfg, {"paths": {"data": str(data)}})
    OmegaConf.save(cfg, folder / "params.yaml", resolve=True)
    stages = order(expand_stages(root / "dvc.yaml", cfg), targets)
    seconds = {}
    with _in_job(folder, root):
        for stage in stages:
            if (
                data is not None
                and stage.outs
                and all(
                    _under(o, prefix) and (data / Path(o).relative_to(prefix)).exists()
                    for o in stage.outs
                )
            ):
                print(f"cift run: {stage.name}: shared data in {data}, skipped", flush=True)
                continue
            argv = shlex.split(stage.cmd)
            if argv[0] != "python":
                raise ValueError(f"dvc.yaml: {stage.name}: cmd must be `python SCRIPT ...`")
            script = root / argv[1]
            sys.argv = [str(script), *argv[2:]]
            started = time.perf_counter()
            print(f"cift run: {stage.name}: {stage.cmd}", flush=True)
            runpy.run_path(str(script), run_name="__main__")
            seconds[stage.name] = round(time.perf_counter() - started, 1)
    return seconds


def hydra_main(root: Path, targets: list[str] | None, data: Path | None, argv: list[str]) -> None:
    """Hand argv to Hydra (overrides, -m, --cfg ...) with conf/ as the config folder."""
    import hydra
    from hydra.core.hydra_config import HydraConfig

    @hydra.main(config_path=None, config_name="config", version_base=None)
    def job(cfg: DictConfig) -> None:
        folder = Path(HydraConfig.get().runtime.output_dir)
        seconds = run_stages(cfg, folder, root, targets, data)
        print(f"cift run: {folder}: {sum(seconds.values()):.0f} s over {len(seconds)} stages")

    sys.argv = ["cift run", "--config-path", str((root / "conf").resolve()), *argv]
    job()

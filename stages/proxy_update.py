"""DVC stage `proxy_update@<i>`: the proxy that will score the next batch.

Usage: python stages/proxy_update.py BATCH_NAME
Reads the previous batch's proxy.json and this batch's deployed.json. `proxy=static` never moves
the proxy; `dynamic` moves it on a promotion: to the promoted adapter itself when the proxy is the
deployed model (`proxy_source: shared`, the embedded default), otherwise (a smaller proxy for a
large model, as in the paper) the same training code fits a proxy adapter on the same selected
data, starting from the previous proxy adapter (`trained`). Writes runs/<experiment>/<batch>/
proxy.json and runs/<experiment>/proxy_versions/<batch>/ (the trained adapter, or only a note).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(name: str) -> None:
    from omegaconf import OmegaConf

    from cift.config import load_params
    from cift.deploy.pointers import next_proxy, pointer_path, previous_pointer, read_pointer
    from cift.io.jsonl import write_json_atomic
    from cift.tracking import log_summary, stage_run

    cfg = load_params()
    exp, runs = cfg.experiment_name, Path(cfg.paths.runs)
    previous = previous_pointer(cfg, name, "proxy")
    deployed = read_pointer(runs, exp, name, "deployed")
    pointer = next_proxy(previous, deployed, cfg.proxy.mode)
    folder = runs / exp / "proxy_versions" / name
    shared = OmegaConf.to_container(cfg.proxy.model) == OmegaConf.to_container(cfg.model)
    with stage_run(cfg, "proxy_update", batch=name) as run:
        if pointer != previous and not shared:
            pointer, trained = train_proxy(cfg, name, previous, folder, run), True
        else:
            folder.mkdir(parents=True, exist_ok=True)
            note = {"trained": False, "proxy": pointer}
            write_json_atomic(folder / "proxy_update.json", note)
            trained = False
        log_summary(
            run, {"trained": trained, "moved": pointer != previous}, proxy=pointer["version"]
        )
    write_json_atomic(pointer_path(runs, exp, name, "proxy"), pointer)
    print(json.dumps(pointer))


def train_proxy(cfg, name: str, previous: dict, folder: Path, run) -> dict:
    """A proxy adapter on the proxy model, fitted on this batch's selection + replay."""
    from hydra.utils import instantiate

    from cift.evaluate.answers import Version
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic
    from cift.tracking import lightning_loggers
    from cift.train import train_adapter

    exp, runs = cfg.experiment_name, Path(cfg.paths.runs)
    init = previous["adapter_path"] if previous.get("proxy_source") == "trained" else None
    summary = train_adapter(
        cfg.train,
        cfg.trainer,
        instantiate(cfg.proxy.model),
        read_jsonl_trusted(runs / exp / name / "selected.jsonl"),
        read_jsonl_trusted(Path(cfg.paths.data) / "general" / "replay.jsonl"),
        system_prompt=cfg.system_prompt,
        out_dir=folder,
        init_adapter=init,
        ckpt_dir=runs / ".ckpt" / exp / f"proxy-{name}",
        seed=cfg.seed,
        logger=lightning_loggers(cfg, "proxy_update", name, run),
    )
    write_json_atomic(folder / "proxy_update.json", {"trained": True, "train": summary})
    version = Version.of(f"{exp}/proxy/{name}", folder, base_hash="")
    return {**version.pointer(), "proxy_source": "trained"}


if __name__ == "__main__":
    main(sys.argv[1])

"""DVC stage `train@<i>`: a LoRA adapter on this batch's selected samples + general replay.

Usage: python stages/train.py BATCH_NAME
Reads runs/<experiment>/<batch>/selected.jsonl, the previous batch's pending.jsonl (selections
of blocked candidates since the last promotion, `train.carry_blocked`), data/general/replay.jsonl
and the deployed pointer of the previous batch (train.init=production starts from its
adapter); writes the adapter to runs/<experiment>/versions/<batch>/ and its summary to
runs/<experiment>/<batch>/train.json.
A killed run resumes from runs/.ckpt/<experiment>/<batch>/last.ckpt.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(name: str) -> None:
    from hydra.utils import instantiate

    from cift.config import batch_spec, load_params
    from cift.deploy.pointers import pending_path, previous_pointer, version_dir
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic
    from cift.tracking import lightning_loggers, log_summary, stage_run
    from cift.train import train_adapter

    started = time.perf_counter()
    cfg = load_params()
    exp, runs = cfg.experiment_name, Path(cfg.paths.runs)
    deployed = previous_pointer(cfg, name, "deployed")
    # the selections a blocked candidate left (train.carry_blocked), then this batch's
    carried = read_jsonl_trusted(pending_path(runs, exp, batch_spec(cfg, name)["prev"]))
    selected = carried + read_jsonl_trusted(runs / exp / name / "selected.jsonl")
    replay = read_jsonl_trusted(Path(cfg.paths.data) / "general" / "replay.jsonl")
    with stage_run(cfg, "train", batch=name) as run:  # one run: Lightning's curves + summary
        summary = train_adapter(
            cfg.train,
            cfg.trainer,
            instantiate(cfg.model),
            selected,
            replay,
            system_prompt=cfg.system_prompt,
            out_dir=version_dir(runs, exp, name),
            init_adapter=deployed["adapter_path"],
            ckpt_dir=runs / ".ckpt" / exp / name,
            seed=cfg.seed,
            logger=lightning_loggers(cfg, "train", name, run),
        )
        summary |= {
            "batch": name,
            "version": f"{exp}/{name}",
            "parent": deployed["version"],
            "carried": len(carried),
            "seconds": round(time.perf_counter() - started, 1),
        }
        log_summary(run, summary, version=summary["version"], parent=summary["parent"])
    write_json_atomic(runs / exp / name / "train.json", summary)
    print(json.dumps({k: summary[k] for k in ("batch", "n", "train_tokens", "final_loss")}))


if __name__ == "__main__":
    main(sys.argv[1])

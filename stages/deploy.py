"""DVC stage `deploy@<i>`: promote the candidate or keep the deployed model (the gate's decision).

Usage: python stages/deploy.py BATCH_NAME
Reads runs/<experiment>/<batch>/decision.json and the previous batch's deployed.json; writes
runs/<experiment>/<batch>/deployed.json (run-local names, never registry ids) and its copy
runs/<experiment>/chain/<batch>.json, and runs/<experiment>/<batch>/pending.jsonl: the selections
the next candidate trains on besides its own (`cift.deploy.pointers.pending_after`). With
`deploy.publish=true` and outside `dvc exp` runs (DVC_EXP_NAME unset) it also publishes the run
to the user's registry, so an ablation or a queued experiment never moves `production`.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path


def main(name: str) -> None:
    from cift.config import batch_spec, load_params
    from cift.deploy.pointers import (
        chain_path,
        deployed_after,
        pending_after,
        pending_path,
        pointer_path,
        previous_pointer,
    )
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    cfg = load_params()
    exp, runs = cfg.experiment_name, Path(cfg.paths.runs)
    previous = previous_pointer(cfg, name, "deployed")
    decision = json.loads((runs / exp / name / "decision.json").read_text())
    pointer = deployed_after(previous, decision, decision["candidate"]) | {
        "batch": name,
        "reasons": decision["reasons"],
    }
    write_json_atomic(pointer_path(runs, exp, name, "deployed"), pointer)
    write_json_atomic(chain_path(runs, exp, name), pointer)
    pending = pending_after(
        read_jsonl_trusted(pending_path(runs, exp, batch_spec(cfg, name)["prev"])),
        read_jsonl_trusted(runs / exp / name / "selected.jsonl"),
        promoted=bool(decision["promote"]),
        carry=bool(cfg.train.get("carry_blocked", False)),
    )
    write_jsonl_atomic(pending_path(runs, exp, name), pending)
    print(json.dumps(pointer))
    published = cfg.deploy.publish and not os.environ.get("DVC_EXP_NAME")
    if published:
        from cift.registry import Registry

        registry = Registry(cfg.deploy.registry_dir)
        summary = registry.publish(runs / exp, command=f"dvc repro deploy ({name})")
        print(json.dumps({"published": str(registry.root), **summary}, default=str))
    with stage_run(cfg, "deploy", batch=name) as run:
        log_summary(
            run,
            {
                "promote": bool(decision["promote"]),
                "published": bool(published),
                "pending": len(pending),
            },
            deployed=pointer["version"],
            decision=pointer.get("decision"),
        )


if __name__ == "__main__":
    main(sys.argv[1])

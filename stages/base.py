"""DVC stage `base`: the starting pointers of an experiment (the base model, no adapter).

Usage: python stages/base.py   (writes runs/<experiment>/base/{deployed,proxy}.json and an empty
pending.jsonl)
"""

from __future__ import annotations


def main() -> None:
    from cift.config import load_params
    from cift.deploy.pointers import base_deployed, base_proxy, pending_path, pointer_path
    from cift.io.jsonl import write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    cfg = load_params()
    exp, runs = cfg.experiment_name, cfg.paths.runs
    deployed, proxy = base_deployed(exp), base_proxy(exp, cfg.proxy.mode)
    write_json_atomic(pointer_path(runs, exp, "base", "deployed"), deployed)
    write_json_atomic(pointer_path(runs, exp, "base", "proxy"), proxy)
    write_jsonl_atomic(pending_path(runs, exp, "base"), [])  # nothing selected yet
    with stage_run(cfg, "base") as run:
        log_summary(run, {}, deployed=deployed["version"], proxy=proxy["version"])


if __name__ == "__main__":
    main()

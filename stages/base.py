"""DVC stage `base`: the starting pointers of an experiment (the base model, no adapter).

Usage: python stages/base.py   (writes runs/<experiment>/base/{deployed,proxy}.json)
"""

from __future__ import annotations


def main() -> None:
    from cift.config import load_params
    from cift.deploy.pointers import base_deployed, base_proxy, pointer_path
    from cift.io.jsonl import write_json_atomic

    cfg = load_params()
    exp, runs = cfg.experiment_name, cfg.paths.runs
    write_json_atomic(pointer_path(runs, exp, "base", "deployed"), base_deployed(exp))
    write_json_atomic(pointer_path(runs, exp, "base", "proxy"), base_proxy(exp, cfg.proxy.mode))


if __name__ == "__main__":
    main()

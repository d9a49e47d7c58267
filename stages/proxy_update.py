"""DVC stage `proxy_update@<i>`: the proxy that will score the next batch.

Usage: python stages/proxy_update.py BATCH_NAME
Reads the previous batch's proxy.json and this batch's deployed.json.
"""

from __future__ import annotations

import sys


def main(name: str) -> None:
    from cift.config import load_params
    from cift.deploy.pointers import next_proxy, pointer_path, previous_pointer, read_pointer
    from cift.io.jsonl import write_json_atomic

    cfg = load_params()
    exp, runs = cfg.experiment_name, cfg.paths.runs
    previous = previous_pointer(cfg, name, "proxy")
    deployed = read_pointer(runs, exp, name, "deployed")
    pointer = next_proxy(previous, deployed, cfg.proxy.mode)
    write_json_atomic(pointer_path(runs, exp, name, "proxy"), pointer)
    print(pointer)


if __name__ == "__main__":
    main(sys.argv[1])

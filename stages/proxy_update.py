"""DVC stage `proxy_update@<i>`: the proxy that will score the next batch.

Usage: python stages/proxy_update.py BATCH_NAME
Reads the previous batch's proxy.json (and this batch's deployed.json once deployment runs).
"""

from __future__ import annotations

import json
import sys


def main(name: str) -> None:
    from cift.config import load_params
    from cift.deploy.pointers import next_proxy, pointer_path
    from cift.generate.batches import batch_spec
    from cift.io.jsonl import write_json_atomic

    cfg = load_params()
    exp, runs = cfg.experiment_name, cfg.paths.runs
    prev = batch_spec(cfg, name)["prev"]
    previous = json.loads(pointer_path(runs, exp, prev, "proxy").read_text())
    deployed_path = pointer_path(runs, exp, name, "deployed")
    deployed = json.loads(deployed_path.read_text()) if deployed_path.is_file() else None
    pointer = next_proxy(previous, deployed, cfg.proxy.mode)
    write_json_atomic(pointer_path(runs, exp, name, "proxy"), pointer)
    print(pointer)


if __name__ == "__main__":
    main(sys.argv[1])

"""DVC stage `known@<i>`: which of batch i's selected samples the deployed model already knows.

Usage: python stages/known.py BATCH_NAME
Reads the chain's selection runs/<experiment>/<batch>/selected.jsonl and the static proxy's
runs/<experiment>/<batch>/static/selected.jsonl (same candidates), and the model deployed
before the batch (runs/<experiment>/<prev>/deployed.json). Each sample selected by either proxy
is ranked once (`cift.evaluate.known`: the gold condition ranked first right after its prompt +
"Diagnosis: "). Writes runs/<experiment>/<batch>/known.jsonl (one row per sample id, with the
proxies that selected it) and known.json. The first batch has no history to compare against
(both proxies are the initial one): it writes empty files without loading a model.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path


def main(name: str) -> None:
    from hydra.utils import instantiate

    from cift.config import domain_kb, load_params
    from cift.deploy.pointers import previous_pointer
    from cift.evaluate.build import load_model, pointer_version
    from cift.evaluate.known import known_rows, union_of_selections
    from cift.evaluate.ranked import RankCache
    from cift.io.jsonl import read_jsonl_trusted, write_json_atomic, write_jsonl_atomic
    from cift.tracking import log_summary, stage_run

    started = time.perf_counter()
    cfg = load_params()
    folder = Path(cfg.paths.runs) / cfg.experiment_name / name
    where = {"dynamic": folder / "selected.jsonl", "static": folder / "static" / "selected.jsonl"}
    prev = previous_pointer(cfg, name, "deployed")
    first = [b.name for b in cfg.data.batches].index(name) == 0
    rows: list[dict] = []
    stats: dict = {"ranked": 0, "cached": 0, "seconds": 0.0}
    if not first:
        union = union_of_selections(
            {proxy: read_jsonl_trusted(path) for proxy, path in where.items()}, where
        )
        spec = instantiate(cfg.model)
        scored, stats = known_rows(
            lambda version: load_model(spec, version),
            pointer_version(prev, spec),
            [u["sample"] for u in union],
            domain_kb(cfg),
            cfg.system_prompt,
            cache=RankCache(cfg.evaluate.get("cache_dir")),
            max_tokens=int(cfg.evaluate.get("rank_max_tokens", 8192)),
        )
        rows = [r | {"selected_by": u["selected_by"]} for r, u in zip(scored, union, strict=True)]
    write_jsonl_atomic(folder / "known.jsonl", rows)
    counted = [r for r in rows if r["known"] is not None]
    summary = {
        "batch": name,
        "deployed": prev["version"],
        "skipped": "first batch: no earlier training to know from" if first else None,
        "candidates": len(rows),
        "no_gold": len(rows) - len(counted),
        "known": sum(r["known"] for r in counted),
        **{
            proxy: {
                "selected": sum(proxy in r["selected_by"] for r in rows),
                "known_selected": sum(bool(r["known"]) for r in rows if proxy in r["selected_by"]),
            }
            for proxy in where
        },
        "ranking": stats,
        "seconds": round(time.perf_counter() - started, 1),
    }
    write_json_atomic(folder / "known.json", summary)
    with stage_run(cfg, "known", batch=name) as run:
        headline = {k: summary[k] for k in ("candidates", "no_gold", "known", "seconds")}
        log_summary(
            run, headline | {p: summary[p] for p in where}, deployed_version=prev["version"]
        )
    print(json.dumps({k: summary[k] for k in ("batch", "candidates", "known", "seconds")}))


if __name__ == "__main__":
    main(sys.argv[1])

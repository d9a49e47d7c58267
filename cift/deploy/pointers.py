"""Run-local pointers the DAG passes between batches (DVC outputs, never registry ids).

`deployed.json` names the version production runs after a batch; `proxy.json` the proxy that
scores the next batch: {"version", "adapter_path", "key", "proxy_source":
"shared|trained|static|base"}. `key` is the content key of the adapter's weights (`lora-<sha256>`),
so a retrained adapter at the same path changes proxy.json and re-runs what scores with it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def base_deployed(experiment: str) -> dict:
    """Before any batch: the original base model, no adapter."""
    return {"version": f"{experiment}/base", "adapter_path": None, "decision": "base"}


def base_proxy(experiment: str, mode: str) -> dict:
    return {
        "version": f"{experiment}/base",
        "adapter_path": None,
        "key": None,
        "proxy_source": "static" if mode == "static" else "base",
    }


def next_proxy(previous: dict, deployed: dict | None, mode: str) -> dict:
    """The proxy after a batch's deployment decision.

    static: never moves. dynamic: follows a promotion (`shared` when proxy and deployed model
    share base and LoRA config, so the promoted adapter is the proxy); unchanged otherwise.
    """
    if mode == "static" or not deployed or deployed.get("decision") != "promote":
        return dict(previous)
    return {
        "version": deployed["version"],
        "adapter_path": deployed["adapter_path"],
        "key": deployed.get("key"),
        "proxy_source": deployed.get("proxy_source", "shared"),
    }


def pointer_path(runs: str | Path, experiment: str, batch: str, kind: str) -> Path:
    return Path(runs) / experiment / batch / f"{kind}.json"


def pending_path(runs: str | Path, experiment: str, batch: str) -> Path:
    """The selected samples not yet in production after `batch` (deploy@<batch> writes it)."""
    return Path(runs) / experiment / batch / "pending.jsonl"


def pending_after(
    pending: list[dict], selected: list[dict], promoted: bool, carry: bool
) -> list[dict]:
    """What the next candidate trains on besides its own batch's selection: nothing after a
    promotion (production has learnt it), else every selection since production was last
    promoted (`train.carry_blocked`): a blocked candidate's data is not thrown away but reaches
    production through the next candidate, as a team would retrain on all pending data."""
    return [] if promoted or not carry else [*pending, *selected]


def chain_path(runs: str | Path, experiment: str, batch: str) -> Path:
    """A copy of `deployed.json` in one folder for the whole chain, so stages that read every
    batch's pointer (the continual report) can depend on exactly that folder."""
    return Path(runs) / experiment / "chain" / f"{batch}.json"


def version_dir(runs: str | Path, experiment: str, batch: str) -> Path:
    """Where the candidate adapter trained on `batch` lives (run-local version `<exp>/<batch>`)."""
    return Path(runs) / experiment / "versions" / batch


def deployed_after(previous: dict, decision: dict, candidate: dict) -> dict:
    """The deployed pointer after a batch: the candidate on promotion, else the previous one."""
    if decision.get("promote"):
        return {**candidate, "decision": "promote", "candidate": candidate["version"]}
    return {**previous, "decision": "keep", "candidate": candidate["version"]}


def read_pointer(runs: str | Path, experiment: str, batch: str, kind: str) -> dict:
    return json.loads(pointer_path(runs, experiment, batch, kind).read_text(encoding="utf-8"))


def previous_pointer(cfg: Any, batch: str, kind: str) -> dict:
    """The `kind` pointer ("deployed" or "proxy") left by the batch before `batch`."""
    from cift.config import batch_spec

    prev = batch_spec(cfg, batch)["prev"]
    return read_pointer(cfg.paths.runs, cfg.experiment_name, prev, kind)

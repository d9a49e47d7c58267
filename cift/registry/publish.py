"""`cift registry publish runs/<experiment>`: a DAG run's versions into the registry.

A run folder holds, per batch, `versions/<batch>/` (the candidate adapter), `<batch>/train.json`,
`<batch>/filter.json`, `<batch>/evaluate.json`, `<batch>/decision.json`, `<batch>/deployed.json`
({"version": "<exp>/<batch>", "adapter_path", "decision": "promote|keep|base", "batch"}) and
`<batch>/proxy.json`. Publishing registers every candidate in batch order (idempotent: keyed on
the adapter's sha256), each with the version deployed before it as parent, then moves
`production` to the run's final deployed version (the last `deployed.json` in batch order; the
base is `v0000`) when it differs, `candidate` to the last candidate, and `proxy` to the run's final
proxy. Publishing twice registers and moves nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from cift.registry.store import (
    BASE_ID,
    CANDIDATE,
    PRODUCTION,
    PROXY,
    WEIGHTS,
    InvalidName,
    NotFound,
    Store,
    dvc_rev,
    git_rev,
)

BATCH_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
NOT_BATCHES = {"base", "versions", "plots"}
SPLIT_KEYS = (
    "n",
    "n_scored",
    "accuracy",
    "accuracy_ci",
    "bleu",
    "rouge_l",
    "fault_rate",
    "safety_violations",
)
JUDGE_KEYS = ("n", "win_rate", "win_rate_ci", "consistency", "inconclusive")
TRAIN_KEYS = ("n", "replay", "train_tokens", "optimizer_steps", "final_loss", "init", "seconds")
FILTER_KEYS = ("n_in", "kept", "dropped", "shortfall")


def check_batch(name: object) -> str:
    if (
        not isinstance(name, str)
        or BATCH_RE.fullmatch(name) is None
        or ".." in name
        or name in NOT_BATCHES
    ):
        raise InvalidName(f"invalid batch name {name!r}")
    return name


def _read(path: Path) -> dict | None:
    try:
        value = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except ValueError as exc:
        raise NotFound(f"{path}: not valid JSON ({exc})") from exc
    return value if isinstance(value, dict) else None


def _present(run_dir: Path) -> dict[str, float]:
    """Batches the run holds, with a timestamp to order them by when nothing better is known."""
    found: dict[str, float] = {}
    for folder in run_dir.iterdir() if run_dir.is_dir() else ():
        if folder.is_dir() and folder.name not in NOT_BATCHES and BATCH_RE.fullmatch(folder.name):
            marks = [folder / "deployed.json", folder / "train.json", folder]
            stamp = next(p for p in marks if p.exists()).stat().st_mtime
            if marks[0].exists() or marks[1].exists():
                found[folder.name] = stamp
    versions = run_dir / "versions"
    for folder in versions.iterdir() if versions.is_dir() else ():
        if (folder / WEIGHTS).is_file() and BATCH_RE.fullmatch(folder.name):
            found.setdefault(folder.name, (folder / WEIGHTS).stat().st_mtime)
    return found


def _params_batches(run_dir: Path) -> list[str]:
    """`data.batches` names from the params.yaml of the repository holding `runs/<experiment>`."""
    import yaml

    places = []
    if len(run_dir.absolute().parents) >= 2:
        places.append(run_dir.absolute().parents[1] / "params.yaml")
    for path in places:
        try:
            params = yaml.safe_load(path.read_text(encoding="utf-8"))
        except (OSError, yaml.YAMLError):
            continue
        batches = ((params or {}).get("data") or {}).get("batches") or []
        names = [b.get("name") if isinstance(b, dict) else b for b in batches]
        names = [n for n in names if isinstance(n, str)]
        if names:
            return names
    return []


def batch_order(run_dir: str | Path) -> list[str]:
    """The run's batches in order: as `params.yaml`'s data.batches lists them, then any others
    by the time their deployed.json / train.json / adapter was written."""
    run_dir = Path(run_dir)
    present = _present(run_dir)
    ordered = [n for n in _params_batches(run_dir) if n in present]
    rest = sorted((n for n in present if n not in ordered), key=lambda n: (present[n], n))
    return ordered + rest


def _pick(row: Any, keys: tuple[str, ...]) -> dict:
    return {k: row[k] for k in keys if isinstance(row, dict) and k in row}


def metrics_summary(evaluate: dict | None, decision: dict | None) -> dict:
    """The candidate's scores per split (with intervals), the judge and the gate's verdict."""
    metrics: dict[str, Any] = {}
    candidate = (evaluate or {}).get("candidate")
    if isinstance(candidate, dict) and candidate:
        metrics["splits"] = {split: _pick(row, SPLIT_KEYS) for split, row in candidate.items()}
    judge = (evaluate or {}).get("judge") or (decision or {}).get("judge")
    if isinstance(judge, dict) and judge:
        metrics["judge"] = _pick(judge, JUDGE_KEYS)
    if decision:
        metrics["gate"] = {
            "promote": bool(decision.get("promote")),
            "reasons": list(decision.get("reasons") or []),
            "notes": list(decision.get("notes") or []),
        }
    return metrics


def filter_summary(flt: dict | None) -> dict | None:
    if not flt:
        return None
    steps = flt.get("steps") if isinstance(flt.get("steps"), dict) else {}
    proxy = flt.get("proxy")
    return {
        "name": flt.get("filter"),
        **_pick(flt, FILTER_KEYS),
        "steps": {k: v.get("dropped") for k, v in steps.items() if isinstance(v, dict)},
        "proxy": proxy.get("version") if isinstance(proxy, dict) else proxy,
    }


def candidate_meta(run_dir: Path, experiment: str, batch: str) -> dict:
    """Metadata of the candidate trained on `batch`, from the run's files (any may be missing)."""
    folder = run_dir / batch
    name = f"{experiment}/{batch}"
    train = _read(folder / "train.json") or {}
    deployed = _read(folder / "deployed.json")
    proxy = _read(folder / "proxy.json")
    meta: dict[str, Any] = {
        "batch": batch,
        "source": name,
        "experiment": experiment,
        "filter": filter_summary(_read(folder / "filter.json")),
        "metrics": metrics_summary(
            _read(folder / "evaluate.json"), _read(folder / "decision.json")
        ),
        "train": _pick(train, TRAIN_KEYS),
        "n_samples": train.get("n"),
    }
    if deployed is not None:
        promoted = deployed.get("decision") == "promote" and deployed.get("version") == name
        meta["decision"] = "promote" if promoted else "keep"
    if proxy and proxy.get("version") == name and proxy.get("proxy_source"):
        meta["proxy_source"] = proxy["proxy_source"]
    elif deployed and deployed.get("version") == name and deployed.get("proxy_source"):
        meta["proxy_source"] = deployed["proxy_source"]
    return meta


def _pointer_id(
    registry: Store, run_dir: Path, pointer: dict, ids: dict[str, str], command: str | None
) -> str:
    """The registry id of a deployed/proxy pointer (registering its adapter when needed)."""
    name = str(pointer.get("version"))
    if name in ids:
        return ids[name]
    adapter = pointer.get("adapter_path")
    if adapter is None:
        return BASE_ID
    places = [Path(adapter)]
    if not Path(adapter).is_absolute() and len(run_dir.absolute().parents) >= 2:
        places.insert(0, run_dir.absolute().parents[1] / adapter)
    parts = name.split("/")
    if len(parts) == 2 and all(BATCH_RE.fullmatch(p) and ".." not in p for p in parts):
        places.append(run_dir.parent / parts[0] / "versions" / parts[1])
    for folder in places:
        if (folder / WEIGHTS).is_file():
            ids[name] = registry.register(folder, {"source": name}, command=command)
            return ids[name]
    raise NotFound(f"{run_dir}: version {name!r} names adapter {adapter!r}, which is not there")


def publish_run(
    registry: Store,
    run_dir: str | Path,
    batches: list[str] | None = None,
    command: str | None = None,
) -> dict:
    """Register a run's candidates and move production to its final deployed version."""
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise NotFound(f"{run_dir}: no such run folder")
    experiment = run_dir.absolute().name
    order = [check_batch(b) for b in (batch_order(run_dir) if batches is None else batches)]
    command = command or f"publish {run_dir}"
    revs = {"git_rev": git_rev(run_dir), "dvc_rev": dvc_rev(run_dir)}
    known = set(registry.load()["versions"])
    ids: dict[str, str] = {f"{experiment}/base": BASE_ID}
    deployed_id, deployed = BASE_ID, None
    proxy = None
    last_candidate = None
    for batch in order:
        adapter = run_dir / "versions" / batch
        if (adapter / WEIGHTS).is_file():
            meta = candidate_meta(run_dir, experiment, batch) | {"parent": deployed_id, **revs}
            ids[f"{experiment}/{batch}"] = last_candidate = registry.register(
                adapter, meta, command=command
            )
        pointer = _read(run_dir / batch / "deployed.json")
        if pointer is not None:
            deployed, deployed_id = pointer, _pointer_id(registry, run_dir, pointer, ids, command)
        proxy = _read(run_dir / batch / "proxy.json") or proxy
    moved = False
    if deployed is not None:
        why = f"{experiment}: final deployed version {deployed.get('version')}"
        if deployed.get("decision"):
            why += f" ({deployed.get('decision')})"
        moved = registry.move_alias(PRODUCTION, deployed_id, "publish", why, command)
    if last_candidate is not None:
        registry.move_alias(
            CANDIDATE, last_candidate, "publish", f"{experiment}: last candidate", command
        )
    proxy_id = None
    if proxy is not None:
        proxy_id = _pointer_id(registry, run_dir, proxy, ids, command)
        why = f"{experiment}: final proxy ({proxy.get('proxy_source')})"
        registry.move_alias(PROXY, proxy_id, "publish", why, command)
    return {
        "run": str(run_dir),
        "experiment": experiment,
        "batches": order,
        "versions": {name: vid for name, vid in ids.items() if name != f"{experiment}/base"},
        "registered": sorted({v for v in ids.values() if v != BASE_ID} - known),
        "production": registry.aliases().get(PRODUCTION),
        "production_moved": moved,
        "proxy": proxy_id,
    }

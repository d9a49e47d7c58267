"""Checks of a run config before any stage works from it: errors name the file and the key."""

from __future__ import annotations

import re
from pathlib import Path

from omegaconf import DictConfig, OmegaConf

NUMBER = (int, float)
REQUIRED: dict[str, type | tuple[type, ...]] = {
    "experiment_name": str,
    "seed": int,
    "system_prompt": str,
    "paths.data": str,
    "model.source": str,
    "teacher.name": str,
    "data.kb": str,
    "data.records_per_batch": int,
    "data.fractions": list,
    "data.min_test_records": int,
    "data.min_val_records": int,
    "data.global_test_per_condition": int,
    "data.probe_records": int,
    "data.table1_test_records": int,
    "data.styles": list,
    "data.batches": list,
    "generate.min_steps": int,
    "generate.max_retries": int,
    "generate.max_new_tokens": int,
    "generate.temperature": NUMBER,
    "generate.top_p": NUMBER,
    "filter.name": str,
    "gate.metric": str,
    "gate.margin": NUMBER,
    "report.margin": NUMBER,
    "report.max_cost_ratio": NUMBER,
}
BATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")


class ConfigError(ValueError):
    """A run config that stages cannot work from; the message names file and key."""


def validate_params(cfg: DictConfig, where: str | Path = "params.yaml") -> None:
    plain = OmegaConf.to_container(cfg, resolve=True)
    for key, kind in REQUIRED.items():
        value = _get(plain, key)
        if value is _MISSING:
            raise ConfigError(f"{where}: {key}: missing")
        if isinstance(value, bool) or not isinstance(value, kind):
            want = kind.__name__ if isinstance(kind, type) else "number"
            raise ConfigError(f"{where}: {key}: expected {want}, got {value!r}")
    fractions = plain["data"]["fractions"]
    if len(fractions) != 3 or abs(sum(fractions) - 1) > 1e-6:
        raise ConfigError(
            f"{where}: data.fractions: need 3 fractions summing to 1, got {fractions}"
        )
    _check_teacher(plain["teacher"], where)
    if plain["gate"]["metric"] not in ("ranked", "generated", "direct"):
        raise ConfigError(f"{where}: gate.metric: expected ranked, generated or direct")
    if plain["gate"].get("forgetting", "pooled") not in ("pooled", "per_batch"):
        raise ConfigError(f"{where}: gate.forgetting: expected pooled or per_batch")
    generated = plain["gate"].get("generated_cases")
    if generated is not None and (isinstance(generated, bool) or not isinstance(generated, int)):
        raise ConfigError(f"{where}: gate.generated_cases: expected an int or null")
    for key in ("gate.margin", "report.margin", "report.max_cost_ratio"):
        if _get(plain, key) < 0:
            raise ConfigError(f"{where}: {key}: expected a number >= 0")
    if plain["data"]["table1_test_records"] < 1:
        raise ConfigError(f"{where}: data.table1_test_records: expected an int >= 1")
    _check_batches(plain["data"]["batches"], where)


def _check_teacher(teacher: dict, where: str | Path) -> None:
    """One teacher (decoding + backend) or `members`, each one such teacher with a share > 0."""
    members = teacher.get("members")
    if members is not None and (not isinstance(members, dict) or not members):
        raise ConfigError(f"{where}: teacher.members: expected a mapping of member teachers")
    for key, member in (members or {"": teacher}).items():
        at = f"teacher.members.{key}" if key else "teacher"
        if not isinstance(member, dict):
            raise ConfigError(f"{where}: {at}: expected a mapping")
        if member.get("decoding") not in ("single", "staged"):
            raise ConfigError(f"{where}: {at}.decoding: expected single or staged")
        if not isinstance((member.get("backend") or {}).get("_target_"), str):
            raise ConfigError(f"{where}: {at}.backend._target_: missing")
        share = member.get("share", 1.0)
        if key and (isinstance(share, bool) or not isinstance(share, NUMBER) or share <= 0):
            raise ConfigError(f"{where}: {at}.share: expected a number > 0, got {share!r}")


def _check_batches(batches: list, where: str | Path) -> None:
    seen: set[str] = {"base"}
    for i, batch in enumerate(batches):
        at = f"{where}: data.batches[{i}]"
        if not isinstance(batch, dict):
            raise ConfigError(f"{at}: expected a mapping {{name, source, prev}}")
        for key in ("name", "source", "prev"):
            if not isinstance(batch.get(key), str) or not batch[key]:
                raise ConfigError(f"{at}.{key}: missing or not a string")
        if not BATCH_NAME.match(batch["name"]) or batch["name"] in seen:
            raise ConfigError(f"{at}.name: {batch['name']!r} is not a new, path-safe batch name")
        if batch["prev"] not in seen:
            raise ConfigError(f"{at}.prev: {batch['prev']!r} is not 'base' or an earlier batch")
        size = batch.get("records")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ConfigError(f"{at}.records: expected a whole number >= 1, got {size!r}")
        if batch["source"] != "synthetic" and not Path(batch["source"]).is_file():
            raise ConfigError(f"{at}.source: {batch['source']}: no such file")
        seen.add(batch["name"])


_MISSING = object()


def _get(tree: dict, dotted: str):
    node = tree
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node

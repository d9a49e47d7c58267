"""Alpaca <-> ShareGPT conversion.

cift stores every sample as Alpaca ({"id","instruction","input","output","meta"}); ShareGPT
(`conversations` with from/value) and chat `messages` (role/content) are converted at the edges.
Import keeps what does not fit the Alpaca shape in `meta` (system prompt, later turns, unknown
top-level keys) so nothing is silently dropped.
"""

from __future__ import annotations

from typing import Any

ALPACA = "alpaca"
SHAREGPT = "sharegpt"
MESSAGES = "messages"
EXPORT_FORMATS = (ALPACA, SHAREGPT, MESSAGES)

HUMAN_ROLES = frozenset({"human", "user"})
ASSISTANT_ROLES = frozenset({"gpt", "assistant"})
SYSTEM_ROLES = frozenset({"system"})
_CONTAINERS = ("conversations", "messages")
_KNOWN_KEYS = frozenset({"id", "meta", "system", *_CONTAINERS})


class FormatError(ValueError):
    """A source object that cannot be converted; `field` is named as in the source."""

    def __init__(self, field: str, reason: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.reason = reason
        self.detail = detail


def is_sharegpt(obj: dict[str, Any]) -> bool:
    """True when a JSON object looks like ShareGPT/chat rather than Alpaca."""
    return "instruction" not in obj and any(key in obj for key in _CONTAINERS)


def from_sharegpt(obj: dict[str, Any]) -> dict[str, Any]:
    """Convert one ShareGPT/chat object to an Alpaca sample (id kept only if given).

    system turn -> meta.system, first human turn -> instruction, first assistant turn after it
    -> output, input "". Raises FormatError naming the source field.
    """
    sample, _ = convert_sharegpt(obj)
    return sample


def convert_sharegpt(obj: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Like from_sharegpt, plus a map Alpaca field -> source field name (for reject messages)."""
    container = next((key for key in _CONTAINERS if key in obj), _CONTAINERS[0])
    turns = obj.get(container)
    if turns is None:
        raise FormatError(container, f"missing_field:{container}", "missing conversation list")
    if not isinstance(turns, list):
        raise FormatError(container, f"wrong_type:{container}", "must be a list of turns")
    meta = obj.get("meta", {})
    if meta is None:
        meta = {}
    if not isinstance(meta, dict):
        raise FormatError("meta", "wrong_type:meta", "must be an object")
    meta = dict(meta)
    fields: dict[str, str] = {"id": "id", "meta": "meta"}
    parsed = [_parse_turn(container, index, turn) for index, turn in enumerate(turns)]

    used: set[int] = set()
    human = next((i for i, (role, _, _) in enumerate(parsed) if role in HUMAN_ROLES), None)
    if human is None:
        field = f"{container}[human]"
        raise FormatError(field, f"missing_field:{field}", "no human/user turn")
    answer = next(
        (i for i, (role, _, _) in enumerate(parsed) if i > human and role in ASSISTANT_ROLES),
        None,
    )
    if answer is None:
        field = f"{container}[gpt]"
        raise FormatError(field, f"missing_field:{field}", "no assistant turn after the user turn")
    used.update((human, answer))
    fields["instruction"] = parsed[human][2]
    fields["output"] = parsed[answer][2]

    system = next((i for i, (role, _, _) in enumerate(parsed) if role in SYSTEM_ROLES), None)
    if system is not None:
        used.add(system)
        meta["system"] = parsed[system][1]
        fields["meta.system"] = parsed[system][2]
    elif "system" in obj:
        meta["system"] = obj["system"]
        fields["meta.system"] = "system"
    extra_turns = [
        {"from": role, "value": value} for i, (role, value, _) in enumerate(parsed) if i not in used
    ]
    if extra_turns:
        meta["extra_turns"] = extra_turns
    extra = {key: value for key, value in obj.items() if key not in _KNOWN_KEYS}
    if extra:
        meta["extra"] = extra

    sample: dict[str, Any] = {
        "instruction": parsed[human][1],
        "input": "",
        "output": parsed[answer][1],
        "meta": meta,
    }
    if obj.get("id") is not None:
        sample["id"] = obj["id"]
    return sample, fields


def _parse_turn(container: str, index: int, turn: Any) -> tuple[str, str, str]:
    """(role, value, source field name of the value) of one turn, or FormatError."""
    where = f"{container}[{index}]"
    if not isinstance(turn, dict):
        raise FormatError(where, f"wrong_type:{where}", "turn must be an object")
    role_key = "from" if "from" in turn else "role"
    value_key = "value" if "value" in turn else "content"
    role, value = turn.get(role_key), turn.get(value_key)
    for key, item in ((role_key, role), (value_key, value)):
        field = f"{where}.{key}"
        if item is None:
            raise FormatError(field, f"missing_field:{field}", "missing")
        if not isinstance(item, str):
            raise FormatError(
                field, f"wrong_type:{field}", f"must be a string, got {json_type(item)}"
            )
    role = role.strip().lower()
    if role not in HUMAN_ROLES | ASSISTANT_ROLES | SYSTEM_ROLES:
        field = f"{where}.{role_key}"
        raise FormatError(field, f"invalid_value:{field}", f"unknown role {role!r}")
    return role, value, f"{where}.{value_key}"


def to_sharegpt(sample: dict[str, Any]) -> dict[str, Any]:
    """Alpaca sample -> ShareGPT object; a non-empty input joins the instruction after a blank line.

    meta (minus `system`, which becomes the system turn) is kept so a re-import round-trips it.
    """
    meta = dict(sample.get("meta") or {})
    system = meta.pop("system", None)
    prompt = sample["instruction"]
    if sample.get("input"):
        prompt = f"{prompt}\n\n{sample['input']}"
    turns = [{"from": "system", "value": system}] if isinstance(system, str) else []
    turns += [{"from": "human", "value": prompt}, {"from": "gpt", "value": sample["output"]}]
    out: dict[str, Any] = {"id": sample["id"]} if sample.get("id") else {}
    out["conversations"] = turns
    if meta:
        out["meta"] = meta
    return out


def to_messages(sample: dict[str, Any]) -> dict[str, Any]:
    """Alpaca sample -> OpenAI-style chat object ({"messages":[{"role","content"}]})."""
    shared = to_sharegpt(sample)
    roles = {"system": "system", "human": "user", "gpt": "assistant"}
    messages = [
        {"role": roles[turn["from"]], "content": turn["value"]} for turn in shared["conversations"]
    ]
    out = {key: value for key, value in shared.items() if key != "conversations"}
    out["messages"] = messages
    return out


def to_alpaca(sample: dict[str, Any]) -> dict[str, Any]:
    """Normalised Alpaca sample (field order fixed, meta always a dict)."""
    return {
        "id": sample.get("id"),
        "instruction": sample["instruction"],
        "input": sample.get("input") or "",
        "output": sample["output"],
        "meta": dict(sample.get("meta") or {}),
    }


def export_samples(samples: list[dict[str, Any]], fmt: str) -> list[dict[str, Any]]:
    """Convert cift samples to `fmt` ("alpaca", "sharegpt" or "messages")."""
    converters = {ALPACA: to_alpaca, SHAREGPT: to_sharegpt, MESSAGES: to_messages}
    if fmt not in converters:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {EXPORT_FORMATS}")
    return [converters[fmt](sample) for sample in samples]


def json_type(value: Any) -> str:
    """JSON type name of a Python value, for messages."""
    names = {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}
    return names.get(type(value), "number")

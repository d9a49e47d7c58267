"""General-domain seed tasks: the replay data mixed 1:1 with domain data, and the held-out set
that measures general-ability change after each continual fine-tuning round.
"""

from __future__ import annotations

import random
import re
import unicodedata
from collections import defaultdict
from pathlib import Path

import yaml

from cift.data.validity import is_degenerate

CATEGORIES = (
    "writing",
    "reasoning",
    "arithmetic",
    "code",
    "knowledge",
    "summarise",
    "classify",
    "rewrite",
)
SHIPPED_TASKS = Path(__file__).with_name("general_tasks.yaml")

_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
_KEYS = {"id", "category", "instruction", "input", "answer"}
# Categories where a bare exact answer ("42", "Paris", "positive") is a complete reply.
_SHORT_OK = {"arithmetic", "knowledge", "classify"}


class GeneralTasksError(ValueError):
    """A general-tasks file is malformed; the message names the file and the key path."""


def load_general_tasks(path: str | Path | None = None) -> list[dict]:
    """Load and validate general tasks (the shipped file when `path` is None).

    Returns dicts with keys id, category, instruction, input ("" when absent), answer (None when
    absent). Raises `GeneralTasksError("<file>: tasks[12].instruction: must be ...")`.
    """
    path = Path(path) if path is not None else SHIPPED_TASKS
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise GeneralTasksError(f"{path}: invalid YAML: {exc}") from exc
    if not isinstance(doc, dict) or not isinstance(doc.get("tasks"), list):
        raise GeneralTasksError(f"{path}: tasks: must be a list under the top-level key 'tasks'")
    tasks = [_validate_task(path, i, raw) for i, raw in enumerate(doc["tasks"])]
    if not tasks:
        raise GeneralTasksError(f"{path}: tasks: must not be empty")
    first_seen: dict[str, int] = {}
    for i, task in enumerate(tasks):
        if task["id"] in first_seen:
            raise GeneralTasksError(
                f"{path}: tasks[{i}].id: duplicate id {task['id']!r} "
                f"(first used at tasks[{first_seen[task['id']]}])"
            )
        first_seen[task["id"]] = i
    return tasks


def _validate_task(path: Path, i: int, raw: object) -> dict:
    where = f"{path}: tasks[{i}]"
    if not isinstance(raw, dict):
        raise GeneralTasksError(f"{where}: must be a mapping")
    unknown = sorted(set(raw) - _KEYS)
    if unknown:
        raise GeneralTasksError(f"{where}: unknown key(s) {unknown}; allowed: {sorted(_KEYS)}")
    for key in ("id", "instruction"):
        value = raw.get(key)
        if not isinstance(value, str) or not value.strip():
            raise GeneralTasksError(f"{where}.{key}: must be a non-empty string")
    if not _ID.match(raw["id"]):
        raise GeneralTasksError(f"{where}.id: {raw['id']!r} must be letters, digits, '-_.'")
    if raw.get("category") not in CATEGORIES:
        raise GeneralTasksError(
            f"{where}.category: {raw.get('category')!r} must be one of {list(CATEGORIES)}"
        )
    task_input = raw.get("input", "")
    if not isinstance(task_input, str):
        raise GeneralTasksError(f"{where}.input: must be a string (may be empty)")
    answer = raw.get("answer")
    if answer is not None and (not isinstance(answer, str) or not _tokens(answer)):
        raise GeneralTasksError(
            f"{where}.answer: must be null or a string with letters or digits (quote numbers)"
        )
    return {
        "id": raw["id"],
        "category": raw["category"],
        "instruction": raw["instruction"].strip(),
        "input": task_input.strip(),
        "answer": answer.strip() if answer is not None else None,
    }


def split_general(
    tasks: list[dict], heldout_fraction: float, seed: int
) -> tuple[list[dict], list[dict]]:
    """Split into (replay, heldout), stratified by category and independent of input order.

    Per category, round(n * heldout_fraction) tasks are held out, at least one and at most n - 1
    when 0 < fraction < 1 and n >= 2. Both lists keep the input order.
    """
    if not 0.0 <= heldout_fraction < 1.0:
        raise ValueError(f"heldout_fraction must be in [0, 1), got {heldout_fraction}")
    by_category: dict[str, list[str]] = defaultdict(list)
    for task in tasks:
        by_category[task["category"]].append(task["id"])
    heldout_ids: set[str] = set()
    for category, ids in sorted(by_category.items()):
        ids = sorted(ids)
        random.Random(f"{seed}:{category}").shuffle(ids)
        k = round(len(ids) * heldout_fraction)
        if heldout_fraction > 0 and len(ids) >= 2:
            k = min(max(k, 1), len(ids) - 1)
        heldout_ids.update(ids[:k])
    replay = [t for t in tasks if t["id"] not in heldout_ids]
    heldout = [t for t in tasks if t["id"] in heldout_ids]
    return replay, heldout


def subsample(
    tasks: list[dict], limit: int | None, seed: int, stream: str = "replay"
) -> list[dict]:
    """At most `limit` tasks drawn with the seed, in input order (None: all): replay only needs
    as many samples as the largest domain selection it is mixed with, and a quick run can judge
    fewer held-out instructions. `stream` keeps the two draws independent."""
    if limit is None or limit >= len(tasks):
        return tasks
    keep = set(random.Random(f"{seed}:{stream}").sample(range(len(tasks)), limit))
    return [t for i, t in enumerate(tasks) if i in keep]


def general_messages(task: dict, system_prompt: str) -> list[dict]:
    """Chat messages: system (omitted when empty), user = instruction [+ blank line + input]."""
    user = task["instruction"]
    if task.get("input"):
        user = f"{user}\n\n{task['input']}"
    messages = [{"role": "system", "content": system_prompt}] if system_prompt else []
    return [*messages, {"role": "user", "content": user}]


def validate_general_answer(task: dict, text: str, *, min_chars: int = 20) -> str | None:
    """Reason to reject a generated answer to a general task, or None when it is acceptable.

    Reasons: "empty", "too_short" (fewer than `min_chars` characters; a short reply is fine for
    arithmetic/knowledge/classify tasks with an exact answer), "degenerate_repetition",
    "wrong_answer" (the task's exact answer, normalised, does not appear in the text).
    """
    stripped = text.strip()
    if not stripped:
        return "empty"
    answer = task.get("answer")
    short_ok = answer is not None and task.get("category") in _SHORT_OK
    if len(stripped) < min_chars and not short_ok:
        return "too_short"
    if is_degenerate(stripped):
        return "degenerate_repetition"
    if answer is not None and not contains_answer(stripped, answer):
        return "wrong_answer"
    return None


def contains_answer(text: str, answer: str) -> bool:
    """True when the answer's normalised tokens occur contiguously in the text's tokens.

    Normalisation: NFKD without accents, case-folded, thousands separators dropped, decimals
    without trailing zeros ("1,845.50" == "1845.5"); "4" does not match inside "42" or "4.5".
    """
    needle, hay = _tokens(answer), _tokens(text)
    if not needle:
        return False
    n = len(needle)
    return any(hay[i : i + n] == needle for i in range(len(hay) - n + 1))


_TOKEN = re.compile(r"(?:(?<![\w.])-)?\d+(?:\.\d+)?|[^\W\d_]+")


def _fold(text: str) -> str:
    text = unicodedata.normalize("NFKD", text).replace("\u2212", "-")
    text = "".join(c for c in text if not unicodedata.combining(c)).casefold()
    return re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)


def _tokens(text: str) -> list[str]:
    out = []
    for tok in _TOKEN.findall(_fold(text)):
        if "." in tok and tok[-1].isdigit():
            tok = tok.rstrip("0").rstrip(".")
        out.append(tok)
    return out


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text.casefold())

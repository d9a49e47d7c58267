"""Dial-insight's two-stage prompt evolution (`generate.prompts=evolved`).

Stage 1: seed instructions per task type (diagnosis, triage, explanation for the patient, summary
of the record, extraction) are evolved by an LLM — rewrite, add constraints, deepen — for
`rounds` rounds, each round evolving the previous round's survivors. An evolved instruction is
kept only if it is one line of 6–60 words, still names its task (`keywords`), has no template
debris and is new; every other one is kept in the rejects with its reason.
Stage 2: each training record's prompt is assembled from a scene, a role, an evolved
instruction of a task type drawn with `task_weights`, and that task's format; the record text
(note, lay description or dialogue) stays the input. Validation and test samples keep the
standard instructions, so evaluation is the same whatever the training prompts were.
"""

from __future__ import annotations

import random
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from cift.models.sampling import Sampling

PARTS = Path(__file__).with_name("prompt_parts.yaml")
REWRITER = (
    "You improve instructions given to a clinical assistant. {operation} Reply with the new "
    "instruction only, in one or two sentences."
)
_DEBRIS = re.compile(r"[{}<>]|instruction\s*:|rewritten|^\W*$", re.IGNORECASE)


def load_parts(path: str | Path | None = None) -> dict:
    return yaml.safe_load(Path(path or PARTS).read_text(encoding="utf-8"))


def _norm(text: str) -> str:
    return re.sub(r"\W+", " ", text.lower()).strip()


def clean(text: str) -> str:
    """The first non-empty line, without quotes or a leading label."""
    line = next((x.strip() for x in text.splitlines() if x.strip()), "")
    line = re.sub(r"^(new|improved)?\s*instruction\s*[:\-]\s*", "", line, flags=re.IGNORECASE)
    return line.strip().strip("\"“”'").strip()


def check_instruction(
    text: str, task: str, parent: str, seen: set[str], keywords: dict
) -> str | None:
    """Why an evolved instruction is rejected, or None."""
    words = text.split()
    if not words:
        return "empty"
    if len(words) < 6:
        return "too_short"
    if len(words) > 60:
        return "too_long"
    if _DEBRIS.search(text):
        return "template_debris"
    if not any(k in text.lower() for k in keywords[task]):
        return "lost_task"
    if _norm(text) == _norm(parent):
        return "unchanged"
    if _norm(text) in seen:
        return "duplicate"
    return None


def evolve(
    teacher: Any,
    parts: Mapping[str, Any],
    *,
    operations: list[str],
    rounds: int = 1,
    max_new_tokens: int = 64,
    seed: int = 0,
) -> tuple[list[dict], list[dict], dict]:
    """(pool rows {task, instruction, operation, parent, round}, rejects with reasons, counts)."""
    from cift.models.chat import TeacherRequest

    seeds = parts["seeds"]
    seen = {_norm(s) for items in seeds.values() for s in items}
    parents = [(task, s) for task, items in seeds.items() for s in items]
    pool, rejects = [], []
    for r in range(rounds):
        requests, meta = [], []
        for i, (task, parent) in enumerate(parents):
            for op in operations:
                system = REWRITER.format(operation=parts["operations"][op])
                messages = [
                    {"role": "system", "content": system},
                    {"role": "user", "content": f"Instruction: {parent}"},
                ]
                requests.append(TeacherRequest(f"r{r}-{i}-{op}", messages))
                meta.append((task, parent, op))
        replies = (
            teacher.generate(
                requests,
                Sampling(max_new_tokens=max_new_tokens, temperature=0.7, top_p=0.95, seed=seed + r),
            )
            if requests
            else []
        )
        survivors = []
        for (task, parent, op), reply in zip(meta, replies, strict=True):
            text = clean(reply.text)
            reason = check_instruction(text, task, parent, seen, parts["keywords"])
            row = {"task": task, "instruction": text, "operation": op, "parent": parent, "round": r}
            if reason:
                rejects.append(row | {"reason": reason, "raw": reply.text})
                continue
            seen.add(_norm(text))
            pool.append(row)
            survivors.append((task, text))
        parents = survivors
    counts = {
        "attempted": len(pool) + len(rejects),
        "kept": len(pool),
        "per_task": {t: sum(p["task"] == t for p in pool) for t in seeds},
    }
    return pool, rejects, counts


class PromptAssembler:
    """record id -> (task type, instruction): scene + role + instruction + format, seeded."""

    def __init__(
        self, pool: list[dict], parts: Mapping[str, Any], weights: Mapping[str, float], seed: int
    ) -> None:
        self.parts, self.seed = parts, seed
        self.tasks = [t for t in parts["seeds"] if float(weights.get(t, 0)) > 0]
        if not self.tasks:
            raise ValueError("generate.evolve.task_weights: no task type has a positive weight")
        self.weights = [float(weights[t]) for t in self.tasks]
        self.instructions = {
            t: [p["instruction"] for p in pool if p["task"] == t] or list(parts["seeds"][t])
            for t in self.tasks
        }

    def __call__(self, record_id: str) -> tuple[str, str]:
        rng = random.Random(f"{self.seed}-{record_id}-evolved")
        task = rng.choices(self.tasks, weights=self.weights)[0]
        text = " ".join(
            [
                rng.choice(self.parts["scenes"]),
                rng.choice(self.parts["roles"]),
                rng.choice(self.instructions[task]),
                self.parts["formats"][task],
            ]
        )
        return task, text

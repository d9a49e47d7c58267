"""CoT generation for a list of records: prompt, generate (single or staged), validate, retry.

Every teacher output ends as a valid sample or a reject with its reason (attempted = valid +
rejected). Results are appended to a progress log as they arrive, so a killed run resumes
where it stopped instead of starting over or leaving a half-written JSONL.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cift.data.answer import ADVICE, DIAGNOSIS, LINE_STOP, STEP_STOP, STEPS_PREFILL
from cift.data.sample import record_sample, sample_task
from cift.data.validity import validate_answer
from cift.generate.prompts import teacher_messages
from cift.models.chat import Teacher, TeacherRequest
from cift.models.generator import cut_at_stop
from cift.models.sampling import Sampling


@dataclass
class GenerationSettings:
    system_prompt: str
    min_steps: int = 3
    min_chars: int = 120
    max_retries: int = 2
    max_new_tokens: int = 256
    temperature: float = 0.7
    top_p: float = 0.95
    blind: bool = False
    decoding: str = "single"  # single: one call | staged: steps, then diagnosis, then advice
    chunk_size: int = 64
    seed: int = 0
    answers_per_record: int = 1  # ≥ 2 gives preference pairs (cift data export-dpo) a choice


@dataclass
class GenerationResult:
    samples: list[dict] = field(default_factory=list)
    rejects: list[dict] = field(default_factory=list)
    completion_tokens: int = 0
    teacher_seconds: float = 0.0

    @classmethod
    def merged(cls, results: Iterable[GenerationResult]) -> GenerationResult:
        """One result of several teachers' (a mix's members): samples, rejects, tokens, seconds."""
        out = cls()
        for r in results:
            out.samples += r.samples
            out.rejects += r.rejects
            out.completion_tokens += r.completion_tokens
            out.teacher_seconds += r.teacher_seconds
        return out

    def stats(self) -> dict:
        """Yield (valid / attempted) overall and per reject reason, and teacher tokens/s."""
        reasons = Counter(r["reason"].split(":")[0] for r in self.rejects)
        attempted = len(self.samples) + len(self.rejects)
        return {
            "attempted": attempted,
            "valid": len(self.samples),
            "rejected": len(self.rejects),
            "records_rejected": sum(1 for r in self.rejects if r["final"]),
            "yield": len(self.samples) / attempted if attempted else 0.0,
            "reject_reasons": dict(sorted(reasons.items())),
            "completion_tokens": self.completion_tokens,
            "teacher_seconds": round(self.teacher_seconds, 2),
            "tokens_per_s": round(self.completion_tokens / self.teacher_seconds, 1)
            if self.teacher_seconds
            else 0.0,
        }


class ProgressLog:
    """Append-only JSONL of finished attempts; a torn last line (a kill mid-write) is ignored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.entries: list[dict] = []
        if path.is_file():
            for line in path.read_text(encoding="utf-8").splitlines():
                try:
                    self.entries.append(json.loads(line))
                except json.JSONDecodeError:
                    break  # the tail written when the run was killed
        path.parent.mkdir(parents=True, exist_ok=True)

    def append(self, entries: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as fh:
            for e in entries:
                fh.write(json.dumps(e, ensure_ascii=False) + "\n")
            fh.flush()
        self.entries += entries


def generate_cot(
    records: list[dict],
    teacher: Teacher,
    kb,
    settings: GenerationSettings,
    progress: Path,
    styles: list[str],
    prompts: Any = None,
) -> GenerationResult:
    """Valid CoT samples for `records` (`settings.answers_per_record` answers each, ids
    `<record>-a1`, `-a2` …), with every invalid attempt kept."""
    log = ProgressLog(progress)
    done = {_slot(e) for e in log.entries if e["status"] == "valid"}
    tries = Counter(_slot(e) for e in log.entries)
    tasks = {r["id"]: sample_task(r, kb, styles, settings.seed) for r in records}
    if prompts is not None:  # generate.prompts=evolved: an assembled prompt per record
        for rid, task in tasks.items():
            task["task_type"], task["instruction"] = prompts(rid)
    slots = [(r, j) for r in records for j in range(1, settings.answers_per_record + 1)]
    for attempt in range(settings.max_retries + 1):
        pending = [
            (r, j) for r, j in slots if (r["id"], j) not in done and tries[(r["id"], j)] == attempt
        ]
        for start in range(0, len(pending), settings.chunk_size):
            chunk = pending[start : start + settings.chunk_size]
            seed = settings.seed + 100_003 * attempt + start
            texts, tokens, secs = _ask(teacher, [r for r, _ in chunk], tasks, kb, settings, seed)
            entries = []
            for (record, j), text in zip(chunk, texts, strict=True):
                task = tasks[record["id"]]
                entries.append(_judge(record, text, task, kb, settings, attempt, answer=j))
                tries[(record["id"], j)] += 1
            entries[0]["tokens"], entries[0]["seconds"] = tokens, secs
            log.append(entries)
            done |= {_slot(e) for e in entries if e["status"] == "valid"}
    result = _collect(log.entries)
    for sample in result.samples:
        sample["meta"]["teacher"] = teacher.name
    return result


def _ask(teacher, chunk, tasks, kb, s: GenerationSettings, seed: int):
    """Teacher texts for a chunk; staged decoding builds the format in code, field by field."""

    def request(record, prefill=None):
        t = tasks[record["id"]]
        gold = None if s.blind else kb.by_name(record["condition"]).name
        msgs = teacher_messages(
            s.system_prompt,
            t["instruction"],
            t["input"],
            gold=gold,
            min_steps=s.min_steps,
            min_chars=s.min_chars,
        )
        if prefill is not None:
            msgs.append({"role": "assistant", "content": prefill})
        return TeacherRequest(record["id"], msgs, record=record, gold=gold)

    def call(reqs, max_new, stop, temperature=s.temperature):
        return teacher.generate(
            reqs,
            Sampling(
                max_new_tokens=max_new,
                temperature=temperature,
                top_p=s.top_p,
                seed=seed,
                stop=tuple(stop or ()),
            ),
        )

    started = time.perf_counter()
    if s.decoding == "single":
        replies = call([request(r) for r in chunk], s.max_new_tokens, None)
        texts = [r.text if not r.error else "" for r in replies]
        tokens = sum(r.completion_tokens for r in replies)
        return texts, tokens, time.perf_counter() - started
    steps = call([request(r, STEPS_PREFILL) for r in chunk], s.max_new_tokens, STEP_STOP)
    bodies = [STEPS_PREFILL + cut_at_stop(r.text, STEP_STOP)[0].rstrip() for r in steps]
    diag = call(  # greedy: the diagnosis is a name to state, not prose to vary
        [request(r, f"{b}\n{DIAGNOSIS}") for r, b in zip(chunk, bodies, strict=True)],
        16,
        LINE_STOP,
        temperature=0.0,
    )
    bodies = [
        f"{b}\n{DIAGNOSIS} " + cut_at_stop(d.text, LINE_STOP)[0].strip()
        for b, d in zip(bodies, diag, strict=True)
    ]
    adv = call(
        [request(r, f"{b}\n{ADVICE}") for r, b in zip(chunk, bodies, strict=True)], 64, LINE_STOP
    )
    texts = [
        f"{b}\n{ADVICE} " + cut_at_stop(a.text, LINE_STOP)[0].strip()
        for b, a in zip(bodies, adv, strict=True)
    ]
    tokens = sum(r.completion_tokens for batch in (steps, diag, adv) for r in batch)
    return texts, tokens, time.perf_counter() - started


def _slot(entry: dict) -> tuple[str, int]:
    return entry["record_id"], entry.get("answer", 1)  # logs before answers_per_record: 1


def _judge(record, text, task, kb, s: GenerationSettings, attempt: int, answer: int = 1) -> dict:
    verdict = validate_answer(text, record, kb, min_steps=s.min_steps)
    entry = {"record_id": record["id"], "answer": answer, "attempt": attempt, "text": text}
    if not verdict.valid:
        final = attempt >= s.max_retries
        return {**entry, "status": "invalid", "reason": verdict.reason, "final": final}
    structured = {**verdict.structured, "diagnosis": kb.by_name(record["condition"]).name}
    generation = {
        "attempt": attempt,
        "temperature": s.temperature,
        "top_p": s.top_p,
        "max_new_tokens": s.max_new_tokens,
        "decoding": s.decoding,
        "blind": s.blind,
    }
    sample = record_sample(
        record,
        task,
        structured,
        sample_id=f"{record['id']}-a{answer}",
        source="teacher",
        generation=generation,
        prompt_task=task.get("task_type", "standard"),
    )
    return {**entry, "status": "valid", "sample": sample}


def _collect(entries: list[dict]) -> GenerationResult:
    out = GenerationResult()
    for e in entries:
        out.completion_tokens += e.get("tokens", 0)
        out.teacher_seconds += e.get("seconds", 0.0)
        if e["status"] == "valid":
            out.samples.append(e["sample"])
        else:
            out.rejects.append(
                {
                    k: e.get(k, 1)
                    for k in ("record_id", "answer", "attempt", "reason", "final", "text")
                }
            )
    return out

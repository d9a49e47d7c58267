"""Model answers for evaluation: batched greedy generation, cached per (version, sample, decoding).

A version is identified by content (the adapter's weights hash, or the base model's hash), not by
name, so a rerun or a rollback never reuses a stale answer and a renamed copy reuses a valid one.
The cache key of one answer is (version key, sample id, decoding parameters, hash of the prompt
template = system prompt + user message + stop rules); the cache is an append-only JSONL per
version, so a killed evaluation keeps what it had finished.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cift.data.answer import STOP_AFTER
from cift.data.sample import student_messages
from cift.io.jsonl import KeyedLog
from cift.models.adapter_format import adapter_digest
from cift.models.chat import TeacherRequest
from cift.models.sampling import Sampling
from cift.progress import progress


@dataclass(frozen=True)
class Version:
    """A model version: a name for people, an adapter folder (None = the base), a content key."""

    name: str
    adapter: str | None
    key: str

    def pointer(self) -> dict:
        """The fields a deployed.json names it by (the key changes whenever the weights do)."""
        return {"version": self.name, "adapter_path": self.adapter, "key": self.key}

    @classmethod
    def of(cls, name: str, adapter: str | Path | None, base_hash: str) -> Version:
        if adapter is None:
            return cls(name, None, f"base-{base_hash[:16]}")
        return cls(name, str(adapter), f"lora-{adapter_digest(adapter)[:16]}")


def answer_sampling(
    max_new_tokens: int = 320,
    *,
    temperature: float = 0.0,
    seed: int = 0,
    stop_after_line: str | None = STOP_AFTER,
) -> Sampling:
    """Greedy by default; the Advice line or the token budget ends an answer."""
    return Sampling(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        seed=seed,
        stop_after_line=stop_after_line,
    )


def answer_key(version: Version, sample: Mapping[str, Any], system_prompt: str, d: Sampling) -> str:
    prompt = json.dumps(student_messages(sample, system_prompt), ensure_ascii=False)
    parts = [version.key, sample["id"], d.key_parts(), hashlib.sha256(prompt.encode()).hexdigest()]
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()


class AnswerCache:
    """Generated answers per version key (`KeyedLog`: append-only, a torn last line ignored)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.log = KeyedLog(folder, "text")
        self.folder = self.log.folder

    def load(self, version: Version) -> dict[str, str]:
        return self.log.load(version.key)

    def add(self, version: Version, rows: Sequence[tuple[str, str]]) -> None:
        self.log.add(version.key, rows)


def generate_answers(
    make_generator: Any,
    version: Version,
    samples: Sequence[Mapping[str, Any]],
    system_prompt: str,
    sampling: Sampling,
    cache: AnswerCache,
    batch_size: int = 16,
) -> tuple[dict[str, str], dict]:
    """{sample id: answer} for `samples`, generating only what the cache lacks.

    make_generator(version, sampling) -> a Teacher (called only when something is missing, so a
    fully cached evaluation never loads a model). Returns (answers, stats: generated, cached,
    tokens, seconds).
    """
    keys = {s["id"]: answer_key(version, s, system_prompt, sampling) for s in samples}
    cached = cache.load(version)
    todo = [s for s in samples if keys[s["id"]] not in cached]
    stats = {
        "generated": len(todo),
        "cached": len(samples) - len(todo),
        "tokens": 0,
        "seconds": 0.0,
    }
    if todo:
        gen = make_generator(version, sampling)
        chunk = max(batch_size * 4, 1)  # cache progress every few batches
        bar = progress(desc=f"answers {version.name}", total=len(todo), unit="answer")
        for start in range(0, len(todo), chunk):
            part = todo[start : start + chunk]
            requests = [TeacherRequest(s["id"], student_messages(s, system_prompt)) for s in part]
            before = getattr(gen, "seconds", 0.0)
            replies = gen.generate(requests, sampling)
            stats["seconds"] += getattr(gen, "seconds", 0.0) - before
            stats["tokens"] += sum(r.completion_tokens for r in replies)
            rows = [(keys[s["id"]], r.text) for s, r in zip(part, replies, strict=True)]
            cache.add(version, rows)
            cached.update(rows)
            bar.update(len(part))
        bar.close()
    stats["seconds"] = round(stats["seconds"], 2)
    return {s["id"]: cached[keys[s["id"]]] for s in samples}, stats

"""One model version on named splits: answers (cached), accuracy, faults, BLEU/ROUGE-L, safety.

`Evaluator` holds what every evaluation shares (KB, records for the red-flag rule, prompt,
sampling, cache, how to build a generator); `evaluate_version` generates every split's answers in
one batched pass and scores each split. The stage and `cift eval-file` are thin callers.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cift.evaluate.answers import AnswerCache, Version, generate_answers
from cift.evaluate.metrics import evaluate_predictions, sample_gold
from cift.evaluate.safety import count_violations, record_red_flags, safety_violations
from cift.models.sampling import Sampling


@dataclass
class Evaluator:
    kb: Any
    system_prompt: str
    sampling: Sampling
    cache: AnswerCache
    make_generator: Callable[[Version, Sampling], Any]
    records: Mapping[str, dict] = field(default_factory=dict)  # record id -> structured record
    n_boot: int = 1000
    seed: int = 0
    batch_size: int = 16

    def safety(self, sample: Mapping[str, Any], text: str) -> list[str]:
        """Violations of one answer, with the record's red flags when the record is known."""
        gold = sample_gold(sample)
        cond = self.kb.normalise(gold) if gold else None
        record = self.records.get((sample.get("meta") or {}).get("record_id", ""))
        flags = bool(record and cond and record_red_flags(record, cond, self.kb))
        return safety_violations(text, cond, self.kb, red_flags_present=flags)

    def score(self, samples: Sequence[Mapping[str, Any]], answers: Mapping[str, str]) -> dict:
        """Metrics of one split (rows included, under "rows", with each answer's violations)."""
        result = evaluate_predictions(samples, answers, self.kb, n_boot=self.n_boot, seed=self.seed)
        result.pop("lang", None)
        for row, sample in zip(result["rows"], samples, strict=True):
            row["safety"] = self.safety(sample, answers[sample["id"]])
            row["answer"] = answers[sample["id"]]
        result["safety"] = count_violations(result["rows"])
        result["safety_violations"] = result["safety"]["total"]
        return result

    def evaluate_version(
        self, version: Version, splits: Mapping[str, Sequence[Mapping[str, Any]]]
    ) -> tuple[dict[str, dict], dict]:
        """({split: metrics with rows}, generation stats) for one version on every split."""
        unique: dict[str, Mapping[str, Any]] = {}
        for samples in splits.values():
            for s in samples:
                unique.setdefault(s["id"], s)
        answers, stats = generate_answers(
            self.make_generator,
            version,
            list(unique.values()),
            self.system_prompt,
            self.sampling,
            self.cache,
            self.batch_size,
        )
        return {name: self.score(samples, answers) for name, samples in splits.items()}, stats


def summary(metrics: Mapping[str, Any]) -> dict:
    """A split's metrics without the per-sample rows and the confusion table (for metrics files)."""
    keep = (
        "n",
        "n_scored",
        "accuracy",
        "accuracy_ci",
        "fault_cases",
        "fault_rate",
        "bleu",
        "rouge_l",
        "safety_violations",
    )
    return {k: metrics.get(k) for k in keep}

"""One model version on named splits: answers (cached), accuracy, faults, BLEU/ROUGE-L, safety,
and the ranked diagnosis score (ranked_accuracy / top3 / mrr, cached like the answers).

`Evaluator` holds what every evaluation shares (KB, records for the red-flag rule, prompt,
sampling, cache, how to build a generator and how to load a model for ranking);
`evaluate_version` generates every split's answers in one batched pass, ranks the KB's
conditions after each answer, and scores each split. The stage and `cift eval-file` are thin
callers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from cift.evaluate.answers import AnswerCache, Version, answer_key, generate_answers
from cift.evaluate.metrics import evaluate_predictions, sample_gold
from cift.evaluate.ranked import (
    RANKED_KEYS,
    RankCache,
    gold_rank,
    rank_cases,
    rank_key,
    ranked_metrics,
)
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
    # version -> (model, tokenizer) for ranked scoring; None: no ranked metrics (scripted tests)
    load_model: Callable[[Version], tuple[Any, Any]] | None = None
    rank_cache: RankCache = field(default_factory=lambda: RankCache(None))
    rank_max_tokens: int = 8192  # tokens (prefix + packed candidates) per ranking forward

    def safety(self, sample: Mapping[str, Any], text: str) -> list[str]:
        """Violations of one answer, with the record's red flags when the record is known."""
        gold = sample_gold(sample)
        cond = self.kb.normalise(gold) if gold else None
        record = self.records.get((sample.get("meta") or {}).get("record_id", ""))
        flags = bool(record and cond and record_red_flags(record, cond, self.kb))
        return safety_violations(text, cond, self.kb, red_flags_present=flags)

    @property
    def candidates(self) -> list[str]:
        """The conditions ranked for every case: every KB condition of the domain."""
        return list(self.kb.names)

    def rank(
        self,
        version: Version,
        samples: Sequence[Mapping[str, Any]],
        answers: Mapping[str, str],
    ) -> tuple[dict[str, list[float]], dict]:
        """({sample id: log-likelihood per candidate}, stats) for samples with a gold diagnosis,
        scoring only what the rank cache lacks (the model is loaded only then)."""
        cands = self.candidates
        todo_keys: dict[str, str] = {}
        for s in samples:
            if sample_gold(s) is None:
                continue
            akey = answer_key(version, s, self.system_prompt, self.sampling)
            todo_keys[s["id"]] = rank_key(akey, answers[s["id"]], cands)
        cached = self.rank_cache.load(version.key)
        todo = [s for s in samples if s["id"] in todo_keys and todo_keys[s["id"]] not in cached]
        stats = {"ranked": len(todo), "cached": len(todo_keys) - len(todo), "seconds": 0.0}
        if todo and self.load_model is not None:
            from cift.data.sample import student_messages

            model, tok = self.load_model(version)
            started = time.perf_counter()
            prompts = [
                tok.apply_chat_template(
                    student_messages(s, self.system_prompt),
                    tokenize=False,
                    add_generation_prompt=True,
                )
                for s in todo
            ]
            scores = rank_cases(
                model,
                tok,
                prompts,
                [answers[s["id"]] for s in todo],
                cands,
                max_tokens=self.rank_max_tokens,
            )
            stats["seconds"] = round(time.perf_counter() - started, 2)
            new = {todo_keys[s["id"]]: sc for s, sc in zip(todo, scores, strict=True)}
            self.rank_cache.add(version.key, new)
            cached.update(new)
        out = {i: cached[k] for i, k in todo_keys.items() if k in cached}
        return out, stats

    def score(
        self,
        samples: Sequence[Mapping[str, Any]],
        answers: Mapping[str, str],
        rankings: Mapping[str, Sequence[float]] | None = None,
    ) -> dict:
        """Metrics of one split (rows included, under "rows", with each answer's violations and,
        given `rankings` from `rank`, the gold's rank and the top-ranked condition)."""
        result = evaluate_predictions(samples, answers, self.kb, n_boot=self.n_boot, seed=self.seed)
        result.pop("lang", None)
        cands = self.candidates
        ranks: list[int | None] = []
        for row, sample in zip(result["rows"], samples, strict=True):
            row["safety"] = self.safety(sample, answers[sample["id"]])
            row["answer"] = answers[sample["id"]]
            if rankings is not None:
                scores = rankings.get(sample["id"])
                ok = scores is not None and row["gold"] in cands
                row["rank"] = gold_rank(scores, cands, row["gold"]) if ok else None
                row["ranked_pred"] = (
                    cands[max(range(len(cands)), key=scores.__getitem__)] if ok else None
                )
                if row["gold"] is not None:
                    ranks.append(row["rank"])
        if rankings is not None:
            result.update(ranked_metrics(ranks, n_boot=self.n_boot, seed=self.seed))
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
        rankings = None
        if self.load_model is not None:
            rankings, stats["ranking"] = self.rank(version, list(unique.values()), answers)
        scored = {name: self.score(samples, answers, rankings) for name, samples in splits.items()}
        return scored, stats


def summary(metrics: Mapping[str, Any]) -> dict:
    """A split's metrics without the per-sample rows and the confusion table (for metrics files)."""
    keep = (
        "n",
        "n_scored",
        "accuracy",
        "accuracy_ci",
        "n_ranked",
        *(k for key in RANKED_KEYS for k in (key, f"{key}_ci")),
        "fault_cases",
        "fault_rate",
        "bleu",
        "rouge_l",
        "safety_violations",
    )
    return {k: metrics.get(k) for k in keep}

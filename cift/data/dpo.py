"""Preference pairs from the filter's leftovers (the paper's future-work idea), for DPO.

A filtered-out sample passed validation but was not selected: its answer is the *rejected* side.
The *chosen* side is another answer to the same record that passed every filter (generate with
`generate.answers_per_record` ≥ 2 to have some), or else the deployed model's answer to the same
prompt when the judge prefers it in both orders. A pair whose chosen equals its rejected is
dropped and counted. Records are TRL's conversational preference format: {"prompt": [system,
user], "chosen": [assistant], "rejected": [assistant]} plus an `id` and where `chosen` came from.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence

from cift.data.sample import student_messages

# filter steps that drop a *valid* sample (everything but the reader's rejects)
NOT_VALID = {"read"}


def filtered_valid(rejected: Sequence[dict]) -> list[dict]:
    return [
        r
        for r in rejected
        if (r.get("filter") or {}).get("step") not in NOT_VALID and r.get("output")
    ]


def _record(sample: dict) -> str | None:
    return (sample.get("meta") or {}).get("record_id")


def _pair(sample: dict, chosen: str, system_prompt: str, source: str) -> dict:
    return {
        "id": sample["id"],
        "prompt": student_messages(sample, system_prompt),
        "chosen": [{"role": "assistant", "content": chosen}],
        "rejected": [{"role": "assistant", "content": sample["output"]}],
        "chosen_source": source,
    }


def preference_pairs(
    rejected: Sequence[dict],
    selected: Sequence[dict],
    system_prompt: str,
    prefer_deployed: Callable[[list[dict]], dict[str, str]] | None = None,
) -> tuple[list[dict], dict]:
    """(pairs, counts). `prefer_deployed(samples)` returns {sample id: the deployed model's
    answer} for the samples whose deployed answer the judge preferred in both orders."""
    by_record: dict[str | None, list[dict]] = defaultdict(list)
    for s in selected:
        by_record[_record(s)].append(s)
    candidates = filtered_valid(rejected)
    pairs, unpaired, identical = [], [], 0
    for sample in candidates:
        alternatives = by_record.get(_record(sample), []) if _record(sample) else []
        if not alternatives:
            unpaired.append(sample)
            continue
        chosen = alternatives[0]["output"]
        if chosen.strip() == sample["output"].strip():
            identical += 1
            continue
        pairs.append(_pair(sample, chosen, system_prompt, f"selected:{alternatives[0]['id']}"))
    from_deployed = prefer_deployed(unpaired) if prefer_deployed and unpaired else {}
    for sample in unpaired:
        answer = from_deployed.get(sample["id"])
        if answer is None:
            continue
        if answer.strip() == sample["output"].strip():
            identical += 1
            continue
        pairs.append(_pair(sample, answer, system_prompt, "deployed"))
    counts = {
        "filtered_valid": len(candidates),
        "pairs": len(pairs),
        "from_selected": sum(p["chosen_source"].startswith("selected:") for p in pairs),
        "from_deployed": sum(p["chosen_source"] == "deployed" for p in pairs),
        "dropped_identical": identical,
        "unpaired": len(candidates) - len(pairs) - identical,
    }
    return pairs, counts


def deployed_preference(cfg, batch: str) -> Callable[[list[dict]], dict[str, str]]:
    """The deployed model before `batch` answers; the configured judge compares both orders."""

    def prefer(samples: list[dict]) -> dict[str, str]:
        from hydra.utils import instantiate

        from cift.deploy.pointers import previous_pointer
        from cift.evaluate.answers import answer_sampling, generate_answers
        from cift.evaluate.build import (
            build_evaluator,
            build_judge,
            judge_configured,
            pointer_version,
        )

        judge = build_judge(cfg)
        if judge is None:
            return {}
        ev = build_evaluator(cfg)
        version = pointer_version(previous_pointer(cfg, batch, "deployed"), instantiate(cfg.model))
        sampling = answer_sampling(int(cfg.evaluate.max_new_tokens))
        answers = generate_answers(
            ev.make_generator,
            version,
            samples,
            cfg.system_prompt,
            sampling,
            ev.cache,
            ev.batch_size,
        )[0]
        items = [
            {
                "id": s["id"],
                "question": s["instruction"],
                "candidate": answers[s["id"]],
                "baseline": s["output"],
            }
            for s in samples
        ]
        judged = judge_configured(cfg, judge, items)
        return {r["id"]: answers[r["id"]] for r in judged["rows"] if r["outcome"] == "win"}

    return prefer

"""How a mixture of experts does where its experts agree and where they do not.

Test cases split into all-correct (every expert right), all-incorrect (every expert wrong) and
mixed (at least one right and one wrong); on each, the MoE's accuracy against the best single
expert (highest overall accuracy). Routing entropy and per-expert load come from one forward over
the test prompts. Over a continual chain, the MoE of the batch adapters is compared with the last
production adapter on every batch's test split: backward transfer of each against the accuracy
right after that batch (R[i][i]).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


def split_table(
    expert_hits: Mapping[str, Mapping[str, bool]], moe_hits: Mapping[str, bool]
) -> dict:
    """{"all_correct"|"all_incorrect"|"mixed": {"n", "moe_accuracy", "best_expert_accuracy"},
    "best_expert"} from per-case correctness (case id -> bool) of each expert and of the MoE."""
    ids = sorted(moe_hits)
    overall = {e: sum(h[i] for i in ids) / len(ids) for e, h in expert_hits.items()} if ids else {}
    best = max(sorted(overall), key=lambda e: overall[e]) if overall else None
    groups: dict[str, list[str]] = {"all_correct": [], "all_incorrect": [], "mixed": []}
    for i in ids:
        hits = [h[i] for h in expert_hits.values()]
        key = "all_correct" if all(hits) else "all_incorrect" if not any(hits) else "mixed"
        groups[key].append(i)

    def acc(hits: Mapping[str, bool], cases: list[str]) -> float | None:
        return sum(hits[i] for i in cases) / len(cases) if cases else None

    table = {
        name: {
            "n": len(cases),
            "moe_accuracy": acc(moe_hits, cases),
            "best_expert_accuracy": acc(expert_hits[best], cases) if best else None,
        }
        for name, cases in groups.items()
    }
    return {**table, "best_expert": best, "overall": {"moe": acc(moe_hits, ids), **overall}}


def bwt(final_row: Sequence[float | None], diagonal: Sequence[float | None]) -> float | None:
    """mean_{i<N} (final[i] − R[i][i]): what a model kept of each batch, against right after it."""
    pairs = [
        (f, d)
        for f, d in zip(final_row[:-1], diagonal[:-1], strict=True)
        if f is not None and d is not None
    ]
    return sum(f - d for f, d in pairs) / len(pairs) if pairs else None


def routing_on(cfg: Any, moe_folder: str, samples: Sequence[dict]) -> dict:
    """Routing entropy and per-expert load over the prompts of `samples` (one batched forward)."""
    import torch
    from hydra.utils import instantiate

    from cift.models.moe import record_gates, routing_stats
    from cift.models.version import load_version
    from cift.train.data import collate, tokenize_samples

    loaded = load_version(instantiate(cfg.model), moe_folder, dtype="float32")
    model = loaded.model
    examples = tokenize_samples(loaded.tokenizer, samples, cfg.system_prompt, 512)
    batch = collate(examples, loaded.tokenizer.pad_token_id)
    record_gates(model, True)
    with torch.no_grad():
        model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    stats = routing_stats(model, batch["attention_mask"])
    record_gates(model, False)
    return stats

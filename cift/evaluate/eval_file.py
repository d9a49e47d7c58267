"""`cift eval-file`: diagnosis accuracy of a model version on any JSONL of labelled free text:
the generated answers' accuracy, the ranked score (ranked_accuracy / top3 / mrr, each with its
bootstrap interval) and the fault rate (answers without a parseable diagnosis) on its own.

Each case is wrapped in a training instruction (the text is the input), so the model sees the
prompt it was trained on; gold labels resolve through the KB's synonyms. Rejected lines and
unresolvable labels are excluded and counted; `limit` takes the first N usable cases in file
order.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cift.data.render import CASE_INSTRUCTION
from cift.evaluate.ranked import RANKED_KEYS
from cift.io.jsonl import read_cases


def usable_cases(
    path: str | Path, text_field: str, label_field: str, kb: Any, limit: int | None = None
) -> tuple[list[dict], dict]:
    """(samples for the evaluator, counts {"rejected", "unresolved_labels", "rejects"})."""
    read = read_cases(path, text_field, label_field)
    samples, unresolved = [], 0
    for case in read.accepted:
        gold = kb.normalise(case["label"])
        if gold is None:
            unresolved += 1
            continue
        if limit is not None and len(samples) >= limit:
            continue  # past the limit: still counted above, not scored
        samples.append(
            {
                "id": case["id"],
                "instruction": CASE_INSTRUCTION,
                "input": case["text"],
                "output": "",
                "gold": gold,
                "meta": case["meta"],
            }
        )
    counts = {
        "rejected": len(read.rejects),
        "unresolved_labels": unresolved,
        "rejects": [r.message for r in read.rejects],
    }
    return samples, counts


def eval_file(
    cfg: Any,
    path: str | Path,
    text_field: str,
    label_field: str,
    *,
    model: str = "production",
    limit: int | None = None,
    registry: str | Path | None = None,
) -> dict:
    """The result line of `cift eval-file` (plus per-case rows under "rows")."""
    from hydra.utils import instantiate

    from cift.deploy.resolve import resolve_model
    from cift.evaluate.build import build_evaluator, version_of

    evaluator = build_evaluator(cfg)
    samples, counts = usable_cases(path, text_field, label_field, evaluator.kb, limit)
    name, adapter = resolve_model(model, cfg, registry)
    version = version_of(name, adapter, instantiate(cfg.model))
    metrics, _ = evaluator.evaluate_version(version, {"cases": samples})
    m = metrics["cases"]
    return {
        "n": m["n_scored"],
        "accuracy": m["accuracy"],
        "accuracy_ci": m["accuracy_ci"],
        **{k: m.get(k) for key in RANKED_KEYS for k in (key, f"{key}_ci")},
        "fault_cases": m["fault_cases"],
        "fault_rate": m["fault_rate"],
        "rejected": counts["rejected"],
        "unresolved_labels": counts["unresolved_labels"],
        "model": name,
        "rows": m["rows"],
        "rejects": counts["rejects"],
    }

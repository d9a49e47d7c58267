"""K-shot guided expert selection over the adapter bank (SPEC §2, K-shot open knowledge).

Every adapter answers the K-shot set once: (a) task performance = diagnosis accuracy where a gold
answer exists; (b) the perplexity of the gold answers under the adapter (lower is better);
(c) group diversity = how often two chosen adapters' predicted diagnoses disagree. The group is
built greedily: each pick maximises a·accuracy + b·ppl_score + c·(mean disagreement with the
adapters already chosen), ppl_score = min–max normalised −log PPL (1 = lowest perplexity). Each
criterion alone is weights 1,0,0 / 0,1,0 / 0,0,1, so comparing criteria is one sweep.
"""

from __future__ import annotations

import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class AdapterScore:
    name: str
    accuracy: float | None
    gold_ppl: float | None
    predictions: dict[str, str | None] = field(default_factory=dict)  # sample id -> diagnosis


def kshot_examples(path: str | Path, k: int, seed: int) -> list[dict]:
    """The first k lines of the file after a seeded shuffle (strict: a bad line is an error)."""
    from cift.io.jsonl import read_samples

    lines = read_samples(Path(path), strict=True).accepted
    random.Random(f"{seed}-kshot").shuffle(lines)
    return lines[:k]


def disagreement(a: AdapterScore, b: AdapterScore) -> float:
    ids = sorted(set(a.predictions) | set(b.predictions))
    if not ids:
        return 0.0
    return sum(a.predictions.get(i) != b.predictions.get(i) for i in ids) / len(ids)


def ppl_scores(scores: Mapping[str, AdapterScore]) -> dict[str, float]:
    logs = {n: -math.log(s.gold_ppl) for n, s in scores.items() if s.gold_ppl}
    if not logs:
        return dict.fromkeys(scores, 0.0)
    lo, hi = min(logs.values()), max(logs.values())
    return {
        n: (logs[n] - lo) / (hi - lo) if hi > lo and n in logs else 1.0 if n in logs else 0.0
        for n in scores
    }


def select_group(
    scores: Mapping[str, AdapterScore], top: int, weights: Sequence[float] = (1.0, 1.0, 0.5)
) -> tuple[list[str], dict[str, dict]]:
    """(the chosen names in pick order, {name: {accuracy, gold_ppl, diversity, combined}})."""
    a, b, c = (float(w) for w in weights)
    ppl = ppl_scores(scores)
    base = {n: a * (s.accuracy or 0.0) + b * ppl[n] for n, s in scores.items()}

    def diversity(name: str, group: list[str]) -> float:
        others = [g for g in group if g != name]
        if not others:
            return 0.0
        return sum(disagreement(scores[name], scores[g]) for g in others) / len(others)

    chosen: list[str] = []
    combined: dict[str, float] = {}
    for _ in range(min(top, len(scores))):
        rest = sorted(n for n in scores if n not in chosen)
        value = {n: base[n] + c * diversity(n, chosen) for n in rest}
        pick = max(rest, key=lambda n: (value[n], -rest.index(n)))
        combined[pick] = value[pick]
        chosen.append(pick)
    table = {}
    for name, s in scores.items():
        div = diversity(name, chosen)
        table[name] = {
            "accuracy": s.accuracy,
            "gold_ppl": s.gold_ppl,
            "diversity": div,
            "combined": combined.get(name, base[name] + c * div),
        }
    return chosen, table


def score_adapters(cfg: Any, adapters: Mapping[str, str], kshot: list[dict]) -> dict:
    """Answer and gold perplexity of every adapter ({name: adapter folder}) on the K-shot set."""
    from hydra.utils import instantiate

    from cift.evaluate.build import build_evaluator, version_of
    from cift.models.version import load_version
    from cift.scoring.ifd import IFDEngine

    spec = instantiate(cfg.model)
    ev = build_evaluator(cfg)
    out = {}
    for name, folder in adapters.items():
        metrics, _ = ev.evaluate_version(version_of(name, folder, spec), {"kshot": kshot})
        rows = metrics["kshot"]["rows"]
        scored = [r["correct"] for r in rows if r["correct"] is not None]
        loaded = load_version(spec, folder)
        engine = IFDEngine(
            loaded.model, loaded.tokenizer, system_prompt=cfg.system_prompt, compile=False
        )
        ppl = [r["ppl_cond"] for r in engine.score(kshot) if r.get("ppl_cond")]
        out[name] = AdapterScore(
            name,
            sum(scored) / len(scored) if scored else None,
            math.exp(sum(math.log(p) for p in ppl) / len(ppl)) if ppl else None,
            {r["id"]: r.get("pred") for r in rows},
        )
    return out

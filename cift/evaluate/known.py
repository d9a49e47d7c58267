"""Does a model already know a sample? It ranks the sample's gold condition first right after
its prompt.

The proxy ablation's own measure (`known_selected`): a sample the deployed model already gets
right is one a data-efficient selector should skip. "Gets right" is the ranked diagnosis score
with no answer at all: the chat prompt as in evaluation (system prompt + instruction + input,
generation prompt included) followed directly by `Diagnosis: ` as the assistant's start, every
KB condition scored by its log-likelihood there (`cift.evaluate.ranked`: one shared-prefix pass
per sample, batched), known = the gold ranked first (ties count against it). A sample whose gold
is missing or not a KB condition is not counted (`known` None).

Rankings are cached with the evaluation's ranks (runs/.cache), keyed by the model version's
weights, the prompt and the candidates, so a re-run of the stage scores only what changed.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cift.evaluate.answers import Version
from cift.evaluate.metrics import sample_gold
from cift.evaluate.ranked import RankCache, gold_rank, rank_cases, rank_key

METHOD = "known-after-prompt-v1"  # part of the cache key: change it when the scoring changes


def known_key(version: Version, sample: Mapping[str, Any], system_prompt: str) -> str:
    """One sample's prompt under one version's weights (the rank cache's answer key)."""
    from cift.data.sample import student_messages

    prompt = json.dumps(student_messages(dict(sample), system_prompt), ensure_ascii=False)
    parts = [METHOD, version.key, hashlib.sha256(prompt.encode()).hexdigest()]
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


def prompt_scores(
    model: Any,
    tokenizer: Any,
    samples: Sequence[Mapping[str, Any]],
    system_prompt: str,
    candidates: Sequence[str],
    *,
    max_tokens: int = 8192,
) -> list[list[float]]:
    """Per sample, every candidate's log-likelihood after its chat prompt + "Diagnosis: "."""
    from cift.data.sample import student_messages

    prompts = [
        tokenizer.apply_chat_template(
            student_messages(dict(s), system_prompt), tokenize=False, add_generation_prompt=True
        )
        for s in samples
    ]
    return rank_cases(
        model, tokenizer, prompts, [None] * len(prompts), candidates, max_tokens=max_tokens
    )


def known_rows(
    load_model: Callable[[Version], tuple[Any, Any]],
    version: Version,
    samples: Sequence[Mapping[str, Any]],
    kb: Any,
    system_prompt: str,
    *,
    cache: RankCache | None = None,
    max_tokens: int = 8192,
) -> tuple[list[dict], dict]:
    """({"id", "gold", "known", "rank", "top"} per sample, in order; stats).

    `load_model(version)` -> (model, tokenizer) is called only when the cache lacks a sample.
    """
    cache = cache or RankCache(None)
    candidates = list(kb.names)
    golds = {}
    for s in samples:
        raw = sample_gold(s)
        gold = kb.normalise(raw) if raw is not None else None
        golds[s["id"]] = gold if gold in candidates else None
    keys = {
        s["id"]: rank_key(known_key(version, s, system_prompt), None, candidates)
        for s in samples
        if golds[s["id"]] is not None
    }
    cached = cache.load(version.key)
    todo = [s for s in samples if s["id"] in keys and keys[s["id"]] not in cached]
    stats = {"ranked": len(todo), "cached": len(keys) - len(todo), "seconds": 0.0}
    if todo:
        model, tok = load_model(version)
        started = time.perf_counter()
        scores = prompt_scores(model, tok, todo, system_prompt, candidates, max_tokens=max_tokens)
        stats["seconds"] = round(time.perf_counter() - started, 2)
        new = {keys[s["id"]]: sc for s, sc in zip(todo, scores, strict=True)}
        cache.add(version.key, new)
        cached.update(new)
    rows = []
    for s in samples:
        gold, row = golds[s["id"]], {"id": s["id"], "gold": golds[s["id"]]}
        if gold is None:
            rows.append(row | {"known": None, "rank": None, "top": None})
            continue
        scores = cached[keys[s["id"]]]
        rank = gold_rank(scores, candidates, gold)
        top = candidates[max(range(len(candidates)), key=scores.__getitem__)]
        rows.append(row | {"known": rank == 1, "rank": rank, "top": top})
    return rows, stats


def known_accuracy(rows: Sequence[Mapping[str, Any]], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """{"n", "accuracy", "accuracy_ci"} of `known_rows`' rows (the direct ranked score: the gold
    ranked first after the prompt), over the rows with a gold."""
    from cift.evaluate.metrics import bootstrap_ci

    hits = [float(r["known"]) for r in rows if r.get("known") is not None]
    ci = bootstrap_ci(hits, n_boot=n_boot, seed=seed)
    return {
        "n": len(hits),
        "accuracy": sum(hits) / len(hits) if hits else None,
        "accuracy_ci": list(ci) if ci is not None else None,
    }


def union_of_selections(
    selections: Mapping[str, Sequence[dict]], where: Mapping[str, Any]
) -> list[dict]:
    """Every sample selected by any proxy, once, in first-seen order, each with `selected_by`;
    the same id with different content in two selections is an error naming both files."""
    out: dict[str, dict] = {}
    for proxy, samples in selections.items():
        for s in samples:
            seen = out.get(s["id"])
            if seen is None:
                out[s["id"]] = {"sample": s, "selected_by": [proxy]}
            elif seen["sample"] != s:
                first = where[seen["selected_by"][0]]
                raise ValueError(
                    f"{where[proxy]}: sample {s['id']!r} differs from the one in {first}: "
                    "the proxies must select from the same candidates"
                )
            else:
                seen["selected_by"].append(proxy)
    return list(out.values())

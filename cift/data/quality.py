"""Dataset quality metrics in Dial-insight's terms, for any sample file.

prompt = `instruction`, context = `input`, tokens counted with the embedded model's tokenizer.
- prompt_complexity = mean prompt tokens
- input_complexity = mean of ⅓·context tokens + ⅔·prompt tokens
- richness = connected components of the graph joining samples whose instruction + input have
  MiniLM cosine ≥ `threshold` (0.82), divided by n; redundancy = 1 − richness
- label_quality = fractions of high / medium / low labels from a grader (None when no sample
  carries `meta.condition`); the default grader's rules: high = valid, faithful and matching the
  gold diagnosis; medium = exactly one of these fails; low = otherwise.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np

from cift.data.answer import normalise_diagnosis, parse_answer
from cift.data.validity import faithfulness_violations, is_degenerate
from cift.scoring.embeddings import prompt_text

LEVELS = ("high", "medium", "low")


def components(emb: np.ndarray, threshold: float) -> int:
    """Connected components of the graph with an edge wherever cosine >= threshold."""
    n = len(emb)
    parent = list(range(n))

    def find(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    if n:
        rows, cols = np.nonzero(np.triu(emb @ emb.T >= threshold - 1e-6, k=1))
        for i, j in zip(rows.tolist(), cols.tolist(), strict=True):
            parent[find(i)] = find(j)
    return len({find(i) for i in range(n)})


class RuleGrader:
    """high / medium / low from three checks: valid format, faithful to the record, gold match."""

    def __init__(self, kb: Any, records: dict[str, dict] | None = None, min_steps: int = 3):
        self.kb, self.records, self.min_steps = kb, records or {}, min_steps

    def checks(self, sample: dict) -> dict[str, bool]:
        parsed = parse_answer(sample.get("output", ""))
        valid = (
            len(parsed["steps"]) >= self.min_steps
            and bool(parsed["diagnosis"])
            and bool(parsed["advice"])
            and not is_degenerate(sample.get("output", ""))
        )
        record = self.records.get((sample.get("meta") or {}).get("record_id"))
        faithful = record is None or not faithfulness_violations(parsed["steps"], record, self.kb)
        gold = self.kb.by_name(sample["meta"]["condition"]).name
        said = normalise_diagnosis(self.kb, parsed["diagnosis"]) if parsed["diagnosis"] else None
        return {"valid": valid, "faithful": faithful, "gold": said == gold}

    def __call__(self, sample: dict) -> str:
        fails = sum(not ok for ok in self.checks(sample).values())
        return LEVELS[min(fails, 2)]


def label_quality(samples: Sequence[dict], grade: Callable[[dict], str]) -> dict | None:
    graded = [grade(s) for s in samples if (s.get("meta") or {}).get("condition")]
    if not graded:
        return None
    return {level: graded.count(level) / len(graded) for level in LEVELS}


def quality_report(
    samples: Sequence[dict],
    count_tokens: Callable[[list[str]], list[int]],
    embed: Callable[[list[str]], np.ndarray],
    grade: Callable[[dict], str] | None = None,
    threshold: float = 0.82,
) -> dict:
    """{"n", "prompt_complexity", "input_complexity", "richness", "redundancy", "label_quality"}."""
    n = len(samples)
    if n == 0:
        return {
            "n": 0,
            "prompt_complexity": None,
            "input_complexity": None,
            "richness": None,
            "redundancy": None,
            "label_quality": None,
        }
    prompts = count_tokens([s.get("instruction", "") for s in samples])
    contexts = count_tokens([s.get("input", "") for s in samples])
    richness = components(embed([prompt_text(s) for s in samples]), threshold) / n
    return {
        "n": n,
        "prompt_complexity": float(np.mean(prompts)),
        "input_complexity": float(
            np.mean([c / 3 + 2 * p / 3 for p, c in zip(prompts, contexts, strict=True)])
        ),
        "richness": richness,
        "redundancy": 1 - richness,
        "label_quality": label_quality(samples, grade) if grade else None,
    }


def tokenizer_counter(tokenizer: Any) -> Callable[[list[str]], list[int]]:
    """Token counts without special tokens (an empty context is 0 tokens)."""

    def count(texts: list[str]) -> list[int]:
        ids = tokenizer(list(texts), add_special_tokens=False)["input_ids"]
        return [len(x) for x in ids]

    return count


def quality_parts(cfg: Any, records: Sequence[dict] = ()) -> tuple[Callable, Callable, Callable]:
    """The run config's token counter (the deployed model's tokenizer), MiniLM and grader."""
    from hydra.utils import instantiate
    from transformers import AutoTokenizer

    from cift.config import domain_kb
    from cift.scoring.embeddings import minilm_embed

    tokenizer = AutoTokenizer.from_pretrained(str(instantiate(cfg.model).local_dir()))
    grader = RuleGrader(domain_kb(cfg), {r["id"]: r for r in records}, cfg.generate.min_steps)
    return tokenizer_counter(tokenizer), minilm_embed, grader


def write_quality_page(folder: Any, name: str, report: dict, prompts: list[int]) -> None:
    """quality.json, quality.png (prompt-token histogram) and quality.html in `folder`."""
    import base64
    import html
    from pathlib import Path

    from cift.io.jsonl import write_json_atomic, write_text_atomic
    from cift.report.html import table
    from cift.report.plots import figure, save_png

    folder = Path(folder)
    write_json_atomic(folder / "quality.json", report)
    plt = figure()
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(prompts, bins=20)
    ax.set(xlabel="prompt tokens", ylabel="samples", title=f"{name}: prompt length")
    save_png(fig, folder / "quality.png")
    plt.close(fig)
    rows = [{"metric": k, "value": v} for k, v in report.items() if k != "label_quality"]
    rows += [
        {"metric": f"label_quality.{k}", "value": v}
        for k, v in (report["label_quality"] or {}).items()
    ]
    png = base64.b64encode((folder / "quality.png").read_bytes()).decode("ascii")
    write_text_atomic(
        folder / "quality.html",
        (
            f"<!doctype html><meta charset='utf-8'><title>quality: {html.escape(name)}</title>"
            f"<h1>Data quality: {html.escape(name)}</h1>{table(rows, ['metric', 'value'])}"
            f"<img alt='prompt tokens' src='data:image/png;base64,{png}'>"
        ),
    )

"""Pairwise LLM-as-a-judge, as in FastChat's llm_judge (MT-Bench): every pair is judged in both
orders (candidate as assistant A, then as assistant B); the two verdicts, mapped back to the
candidate's side, give a win or a loss only when they agree, and a tie when they disagree.

The judge is any `Teacher` (local model or OpenAI-compatible endpoint); its prompt is a config file
(`judge_prompt.yaml` beside this module by default), reference-guided when an item carries a gold
answer. All 2·n judgments go to the judge in one batched `generate` call, greedy by default.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cift.evaluate.metrics import bootstrap_ci
from cift.generate.teachers.base import Teacher, TeacherRequest

DEFAULT_PROMPT_PATH = Path(__file__).resolve().parent / "judge_prompt.yaml"
_FIELDS = ("question", "answer_a", "answer_b", "reference")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(_FIELDS) + r")\}")
SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's prompt templates and verdict tokens (see judge_prompt.yaml)."""

    name: str
    system: str
    user: str
    system_with_reference: str
    user_with_reference: str
    verdicts: tuple[tuple[str, str], ...]  # (label "A"|"B"|"tie", token), e.g. ("A", "[[A]]")

    def messages(
        self, question: str, answer_a: str, answer_b: str, reference: str | None = None
    ) -> list[dict]:
        """Chat messages for one judgment; reference-guided templates when `reference` is set."""
        values = {
            "question": question,
            "answer_a": answer_a,
            "answer_b": answer_b,
            "reference": reference or "",
        }
        guided = bool(reference)
        system = self.system_with_reference if guided else self.system
        user = self.user_with_reference if guided else self.user
        fill = _PLACEHOLDER.sub  # only our names: other braces in the text stay as written
        out = []
        if system.strip():
            out.append({"role": "system", "content": fill(lambda m: values[m[1]], system)})
        out.append({"role": "user", "content": fill(lambda m: values[m[1]], user)})
        return out

    def parse(self, text: str | None) -> str | None:
        """The verdict ("A", "B" or "tie") of the LAST verdict token in `text`; None when there
        is none (a judge often restates the format instructions before its own verdict)."""
        if not text:
            return None
        best, best_pos = None, -1
        for label, token in self.verdicts:
            pos = text.rfind(token)
            if pos > best_pos:
                best, best_pos = label, pos
        return best


def load_judge_prompt(path: str | Path | None = None) -> JudgePrompt:
    """Read a judge prompt YAML (default: the shipped judge_prompt.yaml); ValueError names the
    file and the problem."""
    p = Path(path) if path is not None else DEFAULT_PROMPT_PATH
    data = yaml.safe_load(p.read_text(encoding="utf-8"))
    if not isinstance(data, dict):
        raise ValueError(f"{p}: must be a mapping")
    for key in ("system", "user"):
        if not isinstance(data.get(key), str):
            raise ValueError(f"{p}: {key}: missing or not a string")
    for key in ("answer_a", "answer_b", "question"):
        if "{" + key + "}" not in data["user"]:
            raise ValueError(f"{p}: user: template lacks the {{{key}}} placeholder")
    system_ref = data.get("system_with_reference", data["system"])
    user_ref = data.get("user_with_reference", data["user"])
    if "user_with_reference" in data and "{reference}" not in user_ref:
        raise ValueError(f"{p}: user_with_reference: template lacks the {{reference}} placeholder")
    verdicts = data.get("verdicts") or {"A": "[[A]]", "B": "[[B]]", "tie": "[[C]]"}
    if not isinstance(verdicts, dict) or set(verdicts) != {"A", "B", "tie"}:
        raise ValueError(f"{p}: verdicts: must map exactly A, B and tie to tokens")
    return JudgePrompt(
        name=str(data.get("name", p.stem)),
        system=data["system"],
        user=data["user"],
        system_with_reference=system_ref,
        user_with_reference=user_ref,
        verdicts=tuple((k, str(verdicts[k])) for k in ("A", "B", "tie")),
    )


def _side(verdict: str | None, candidate_is: str) -> str | None:
    """A judge verdict ("A"/"B"/"tie"/None) seen from the candidate: win, loss, tie or None."""
    if verdict is None:
        return None
    if verdict == "tie":
        return "tie"
    return "win" if verdict == candidate_is else "loss"


def judge_pairs(
    judge: Teacher,
    items: Sequence[Mapping[str, Any]],
    *,
    prompt: JudgePrompt | str | Path | None = None,
    max_new_tokens: int = 256,
    seed: int = 0,
    temperature: float = 0.0,
    top_p: float = 1.0,
    min_consistency: float = 0.6,
    n_boot: int = 1000,
    alpha: float = 0.05,
) -> dict:
    """Judge candidate vs baseline answers pairwise, both orders, in one batched judge call.

    items: [{"id", "question", "candidate", "baseline", "reference"?}] (reference = gold answer,
    turns on reference-guided judging for that item).

    Per pair, each order's verdict is mapped to the candidate's side; an unparseable verdict (or a
    failed request) counts as a tie for that order and is counted in "unparseable". The pair's
    outcome is that side when both orders agree and a tie when they disagree. A pair is
    *consistent* only when both verdicts were parsed and agree, so a judge that never emits a
    verdict is inconclusive rather than a source of agreeing ties.

    Returns {"wins", "losses", "ties", "n", "win_rate" = (wins + 0.5·ties)/n, "win_rate_ci"
    (percentile bootstrap over pairs), "consistency", "inconclusive" (consistency <
    min_consistency, or n == 0), "min_consistency", "unparseable", "errors", "prompt", "rows"}.
    """
    jp = prompt if isinstance(prompt, JudgePrompt) else load_judge_prompt(prompt)
    ids = [str(it["id"]) for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("judge items must have unique ids")
    requests: list[TeacherRequest] = []
    for it in items:
        ref = it.get("reference") or None
        q, cand, base = str(it["question"]), str(it["candidate"]), str(it["baseline"])
        requests.append(TeacherRequest(f"{it['id']}|cand=A", jp.messages(q, cand, base, ref)))
        requests.append(TeacherRequest(f"{it['id']}|cand=B", jp.messages(q, base, cand, ref)))
    replies = (
        judge.generate(
            requests,
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            seed=seed,
        )
        if requests
        else []
    )
    if len(replies) != len(requests):
        raise RuntimeError(f"judge returned {len(replies)} replies for {len(requests)} requests")

    rows: list[dict] = []
    counts = {"win": 0, "loss": 0, "tie": 0}
    unparseable = errors = consistent = 0
    by_key = {r.key: r for r in replies}
    if set(by_key) != {r.key for r in requests}:  # keys not echoed: trust the protocol's order
        by_key = {q.key: r for q, r in zip(requests, replies, strict=True)}
    for i, it in enumerate(items):
        first, second = by_key[requests[2 * i].key], by_key[requests[2 * i + 1].key]
        v1, v2 = jp.parse(first.text), jp.parse(second.text)
        errors += (first.error is not None) + (second.error is not None)
        unparseable += (v1 is None) + (v2 is None)
        s1, s2 = _side(v1, "A"), _side(v2, "B")
        agree = s1 is not None and s1 == s2
        consistent += agree
        outcome = s1 if agree else "tie"
        counts[outcome] += 1
        rows.append(
            {
                "id": it["id"],
                "verdict_candidate_a": v1,  # raw verdict with the candidate as assistant A
                "verdict_candidate_b": v2,  # raw verdict with the candidate as assistant B
                "candidate_side": [s1, s2],
                "outcome": outcome,
                "consistent": agree,
                "reference_guided": bool(it.get("reference")),
                "judgment_candidate_a": first.text,
                "judgment_candidate_b": second.text,
            }
        )
    n = len(rows)
    scores = [SCORE[r["outcome"]] for r in rows]
    ci = bootstrap_ci(scores, n_boot=n_boot, seed=seed, alpha=alpha)
    consistency = consistent / n if n else None
    return {
        "wins": counts["win"],
        "losses": counts["loss"],
        "ties": counts["tie"],
        "n": n,
        "win_rate": (counts["win"] + 0.5 * counts["tie"]) / n if n else None,
        "win_rate_ci": list(ci) if ci is not None else None,
        "consistency": consistency,
        "inconclusive": consistency is None or consistency < min_consistency,
        "min_consistency": min_consistency,
        "unparseable": unparseable,
        "errors": errors,
        "prompt": jp.name,
        "judge": getattr(judge, "name", type(judge).__name__),
        "rows": rows,
    }


def pair_items(
    samples: Sequence[Mapping[str, Any]],
    candidate: Mapping[str, str],
    baseline: Mapping[str, str],
) -> list[dict]:
    """judge_pairs() items for one split: the user turn as question, the sample's reference
    answer (when it has one) for reference-guided judging."""
    from cift.data.sample import user_message

    return [
        {
            "id": s["id"],
            "question": user_message(s["instruction"], s.get("input", "")),
            "candidate": candidate[s["id"]],
            "baseline": baseline[s["id"]],
            "reference": s.get("output") or None,
        }
        for s in samples
    ]

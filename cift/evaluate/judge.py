"""Pairwise LLM-as-a-judge, as in FastChat's llm_judge (MT-Bench): every pair is judged in both
orders (candidate as assistant A, then as assistant B).

Two ways to a verdict per order:

* forced choice — a judge with `label_logprobs` (a local model, `forced_choice.LocalJudge`) gets
  the prompt with its reply prefilled up to the verdict ("My final verdict: [[") and the verdict is
  the label with the highest log-probability, so every judgment has one. The pair's outcome is
  the side with the higher probability averaged over both orders (balanced position calibration,
  Wang et al. 2023, "Large Language Models are not Fair Evaluators"): a judge that prefers
  whatever comes first cancels out instead of deciding.
* text — any other `Teacher` (an OpenAI-compatible endpoint) writes its judgment; the verdict is
  the last verdict token in it. When the endpoint returned log-probabilities the verdict token's
  alternatives give the label probabilities and the pair is decided as above; otherwise both
  orders' verdicts, mapped to the candidate's side, give a win or a loss only when they agree,
  and a tie when they disagree.

A request that failed after the endpoint's retries is an error (`JudgeError`, naming the endpoint
and the HTTP status), never an empty judgment that would count as a tie. The prompt is a config
file (`judge_prompt.yaml` beside this module by default), reference-guided when an item carries a
gold answer. All 2·n judgments go to the judge in one batched call, greedy by default.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from cift.evaluate.metrics import bootstrap_ci
from cift.models.chat import TeacherRequest
from cift.models.sampling import Sampling

DEFAULT_PROMPT_PATH = Path(__file__).resolve().parent / "judge_prompt.yaml"
_FIELDS = ("question", "answer_a", "answer_b", "reference")
_PLACEHOLDER = re.compile(r"\{(" + "|".join(_FIELDS) + r")\}")
SCORE = {"win": 1.0, "tie": 0.5, "loss": 0.0}
LABELS = ("A", "B", "tie")
DEFAULT_PREFILL = "My final verdict: "


class JudgeError(RuntimeError):
    """The judge could not rule: an endpoint request failed after its retries."""


def calibration_note(accuracy: float | None, minimum: float) -> str | None:
    """ "uninformative (calibration 0.xx)" when a judge's calibration accuracy is below `minimum`
    (the gate and the continual report then record this instead of the judge's result)."""
    if accuracy is not None and accuracy >= minimum:
        return None
    shown = "n/a" if accuracy is None else f"{accuracy:.2f}"
    return f"uninformative (calibration {shown})"


def _common_prefix(texts: Sequence[str]) -> str:
    n = 0
    while all(len(t) > n and t[n] == texts[0][n] for t in texts):
        n += 1
    return texts[0][:n]


def _affixes(tokens: Sequence[str]) -> tuple[str, str]:
    """The longest prefix and suffix all verdict tokens share ("[[", "]]" for "[[A]]"...)."""
    prefix = _common_prefix(tokens)
    suffix = _common_prefix([t[len(prefix) :][::-1] for t in tokens])[::-1]
    return prefix, suffix


@dataclass(frozen=True)
class JudgePrompt:
    """The judge's prompt templates and verdict tokens (see judge_prompt.yaml)."""

    name: str
    system: str
    user: str
    system_with_reference: str
    user_with_reference: str
    verdicts: tuple[tuple[str, str], ...]  # (label "A"|"B"|"tie", token), e.g. ("A", "[[A]]")
    prefill: str = DEFAULT_PREFILL + "[["  # forced choice: the reply starts with this ...
    choices: tuple[tuple[str, str], ...] = (("A", "A"), ("B", "B"), ("tie", "C"))  # ... then one

    def messages(
        self,
        question: str,
        answer_a: str,
        answer_b: str,
        reference: str | None = None,
        forced: bool = False,
    ) -> list[dict]:
        """Chat messages for one judgment; reference-guided templates when `reference` is set;
        `forced` ends them with the prefilled reply the verdict label continues."""
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
        if forced:
            out.append({"role": "assistant", "content": self.prefill})
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

    def token_probs(self, text: str, logprobs: Sequence[Mapping]) -> dict[str, float] | None:
        """Label probabilities at the last verdict token of a generated judgment, from the
        endpoint's per-token top log-probabilities (normalised over the labels found); None
        when there is no verdict or its token's alternatives name no label."""
        tokens = [str(t["token"]) for t in logprobs]
        joined = "".join(tokens)
        last = max(joined.rfind(token) for _, token in self.verdicts)
        if last < 0:
            return None
        prefix, suffix = _affixes([t for _, t in self.verdicts])
        at = last + len(prefix)  # the first character where the labels differ
        ends = list(itertools.accumulate(len(t) for t in tokens))
        k = next(i for i, end in enumerate(ends) if end > at)  # the token holding that character
        head = tokens[k][: at - (ends[k] - len(tokens[k]))]  # its text before the label ("[[")
        alternatives = {**logprobs[k].get("top", {}), tokens[k]: logprobs[k]["logprob"]}
        found: dict[str, float] = {}
        for label, verdict in self.verdicts:
            word = verdict[len(prefix) : len(verdict) - len(suffix)]
            full = word + suffix
            for alt, lp in alternatives.items():
                rest = alt[len(head) :] if alt.startswith(head) else ""
                if rest.startswith(word) and (full.startswith(rest) or rest.startswith(full)):
                    found[label] = max(lp, found.get(label, -math.inf))
        return _normalise(found) if found else None


def _normalise(logps: Mapping[str, float]) -> dict[str, float]:
    """Probabilities over the three labels from log-probabilities (a missing label gets 0)."""
    top = max(logps.values())
    weights = {label: math.exp(logps[label] - top) if label in logps else 0.0 for label in LABELS}
    total = sum(weights.values())
    return {label: w / total for label, w in weights.items()}


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
    tokens = [str(verdicts[k]) for k in LABELS]
    prefix, suffix = _affixes(tokens)
    forced = data.get("forced_choice") or {}
    if not isinstance(forced, dict):
        raise ValueError(f"{p}: forced_choice: must be a mapping {{prefill, labels}}")
    words = [t[len(prefix) : len(t) - len(suffix)] for t in tokens]  # "A" of "[[A]]"
    default = dict(zip(LABELS, words, strict=True))
    choices = forced.get("labels") or default
    if not isinstance(choices, dict) or set(choices) != set(LABELS):
        raise ValueError(f"{p}: forced_choice.labels: must map exactly A, B and tie to text")
    if len({str(v) for v in choices.values()}) != 3 or not all(str(v) for v in choices.values()):
        raise ValueError(f"{p}: forced_choice.labels: need three different, non-empty labels")
    return JudgePrompt(
        name=str(data.get("name", p.stem)),
        system=data["system"],
        user=data["user"],
        system_with_reference=system_ref,
        user_with_reference=user_ref,
        verdicts=tuple((k, t) for k, t in zip(LABELS, tokens, strict=True)),
        prefill=str(forced.get("prefill", DEFAULT_PREFILL + prefix)),
        choices=tuple((k, str(choices[k])) for k in LABELS),
    )


def _side(verdict: str | None, candidate_is: str) -> str | None:
    """A judge verdict ("A"/"B"/"tie"/None) seen from the candidate: win, loss, tie or None."""
    if verdict is None:
        return None
    if verdict == "tie":
        return "tie"
    return "win" if verdict == candidate_is else "loss"


@dataclass(frozen=True)
class Judgment:
    """One order's verdict ("A", "B", "tie" or None) and, when known, the label probabilities."""

    verdict: str | None
    probs: dict[str, float] | None = None
    text: str | None = None


def _endpoint(judge: Any) -> str:
    url = getattr(judge, "base_url", None)
    name = getattr(judge, "name", type(judge).__name__)
    return f"{name} at {url}" if url else str(name)


def _forced_judgments(judge: Any, jp: JudgePrompt, requests: list[TeacherRequest]) -> list:
    """One `label_logprobs` call over every request: the argmax label is the verdict."""
    scores = judge.label_logprobs(requests, [text for _, text in jp.choices])
    if len(scores) != len(requests):
        raise JudgeError(f"judge {_endpoint(judge)}: {len(scores)} scores for {len(requests)}")
    out = []
    for row in scores:
        probs = _normalise(dict(zip(LABELS, row, strict=True)))
        out.append(Judgment(max(LABELS, key=lambda k: probs[k]), probs))
    return out


def _text_judgments(
    judge: Any, jp: JudgePrompt, requests: list[TeacherRequest], sampling: Sampling
) -> list:
    """One batched `generate` call; a failed request raises, naming endpoint and status."""
    replies = judge.generate(requests, sampling) if requests else []
    if len(replies) != len(requests):
        raise JudgeError(f"judge returned {len(replies)} replies for {len(requests)} requests")
    failed = [r for r in replies if r.error is not None]
    if failed:
        raise JudgeError(
            f"judge endpoint {_endpoint(judge)}: {len(failed)} of {len(replies)} requests failed "
            f"after retries; first ({failed[0].key}): {failed[0].error}"
        )
    by_key = {r.key: r for r in replies}
    if set(by_key) != {r.key for r in requests}:  # keys not echoed: trust the protocol's order
        by_key = {q.key: r for q, r in zip(requests, replies, strict=True)}
    out = []
    for q in requests:
        reply = by_key[q.key]
        probs = jp.token_probs(reply.text, reply.logprobs) if reply.logprobs else None
        verdict = max(LABELS, key=lambda k: probs[k]) if probs else jp.parse(reply.text)
        out.append(Judgment(verdict, probs, reply.text))
    return out


def _outcome(first: Judgment, second: Judgment) -> tuple[str, bool]:
    """(outcome for the candidate, consistent) of a pair judged with the candidate as A, then B.

    With label probabilities in both orders: the side with the higher mean probability over the
    two orders (a tie when "tie" is, or when the sides are level). Without: the side both orders
    agree on, else a tie."""
    s1, s2 = _side(first.verdict, "A"), _side(second.verdict, "B")
    agree = s1 is not None and s1 == s2
    if first.probs is None or second.probs is None:
        return (s1 if agree else "tie"), agree
    mean = {
        "win": (first.probs["A"] + second.probs["B"]) / 2,
        "loss": (first.probs["B"] + second.probs["A"]) / 2,
        "tie": (first.probs["tie"] + second.probs["tie"]) / 2,
    }
    best = max(mean.values())
    leaders = [k for k, v in mean.items() if v == best]
    return (leaders[0] if len(leaders) == 1 else "tie"), agree


def judge_pairs(
    judge: Any,
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

    judge: a forced-choice judge (`label_logprobs(requests, labels)`, e.g. LocalJudge) or any
    `Teacher` (text verdicts). items: [{"id", "question", "candidate", "baseline",
    "reference"?}] (reference = gold answer, turns on reference-guided judging for that item).

    Each order gets a verdict ("A", "B", "tie"; a text judgment without a verdict token is None,
    counted in "unparseable", and treated as a tie). The pair's outcome follows `_outcome`. A
    pair is *consistent* when both orders' verdicts map to the same side of the candidate, so a
    judge that never emits a verdict, or always names the first answer, is inconclusive.

    Returns {"wins", "losses", "ties", "n", "win_rate" = (wins + 0.5·ties)/n, "win_rate_ci"
    (percentile bootstrap over pairs), "consistency", "inconclusive" (consistency <
    min_consistency, or n == 0), "min_consistency", "unparseable", "method" ("logprobs" when
    every pair was decided from label probabilities, else "text"), "prompt", "judge", "rows"}.
    Raises JudgeError when the endpoint failed a request after its retries.
    """
    jp = prompt if isinstance(prompt, JudgePrompt) else load_judge_prompt(prompt)
    ids = [str(it["id"]) for it in items]
    if len(set(ids)) != len(ids):
        raise ValueError("judge items must have unique ids")
    forced = callable(getattr(judge, "label_logprobs", None))
    requests: list[TeacherRequest] = []
    for it in items:
        ref = it.get("reference") or None
        q, cand, base = str(it["question"]), str(it["candidate"]), str(it["baseline"])
        for key, a, b in (("cand=A", cand, base), ("cand=B", base, cand)):
            msgs = jp.messages(q, a, b, ref, forced=forced)
            requests.append(TeacherRequest(f"{it['id']}|{key}", msgs))
    if forced:
        judgments = _forced_judgments(judge, jp, requests) if requests else []
    else:
        sampling = Sampling(
            max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed
        )
        judgments = _text_judgments(judge, jp, requests, sampling)

    rows: list[dict] = []
    counts = {"win": 0, "loss": 0, "tie": 0}
    unparseable = consistent = by_probs = 0
    for i, it in enumerate(items):
        first, second = judgments[2 * i], judgments[2 * i + 1]
        unparseable += (first.verdict is None) + (second.verdict is None)
        outcome, agree = _outcome(first, second)
        consistent += agree
        by_probs += first.probs is not None and second.probs is not None
        counts[outcome] += 1
        rows.append(
            {
                "id": it["id"],
                "verdict_candidate_a": first.verdict,  # with the candidate as assistant A
                "verdict_candidate_b": second.verdict,  # with the candidate as assistant B
                "candidate_side": [_side(first.verdict, "A"), _side(second.verdict, "B")],
                "outcome": outcome,
                "consistent": agree,
                "reference_guided": bool(it.get("reference")),
                "probs_candidate_a": first.probs,
                "probs_candidate_b": second.probs,
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
        "method": "logprobs" if n and by_probs == n else "text",
        "prompt": jp.name,
        "judge": getattr(judge, "name", type(judge).__name__),
        "rows": rows,
    }


def pair_items(
    samples: Sequence[Mapping[str, Any]],
    candidate: Mapping[str, str],
    baseline: Mapping[str, str],
    with_reference: bool = True,
) -> list[dict]:
    """judge_pairs() items for one split: the user turn (instruction and input, as the models
    saw it) as question, and, when `with_reference`, the sample's reference answer (when it has
    one) for reference-guided judging."""
    from cift.data.sample import user_message

    return [
        {
            "id": s["id"],
            "question": user_message(s["instruction"], s.get("input", "")),
            "candidate": candidate[s["id"]],
            "baseline": baseline[s["id"]],
            "reference": (s.get("output") or None) if with_reference else None,
        }
        for s in samples
    ]

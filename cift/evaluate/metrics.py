"""Reporting metrics for a model's answers: diagnosis accuracy (with bootstrap intervals), fault
cases, BLEU / ROUGE-L against the reference answers, and a confusion summary.

Every function is pure (no model, no files): the evaluate stage generates the answers and hands the
texts here. Accuracies are fractions in [0, 1]; BLEU is sacrebleu's 0-100 corpus score; ROUGE-L is
rouge-score's mean F1 in [0, 1]. Neither text metric is hand-written.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from cift.data.answer import normalise_diagnosis, parse_answer
from cift.data.validity import is_degenerate

FAULT_KINDS = ("empty", "degenerate_repetition", "no_diagnosis")
_MAX_JSON_STARTS = 64  # "{" positions tried per text when looking for a JSON object
_BOOT_CHUNK = 4_000_000  # resampled values held in memory at once
# CJK ideographs, kana, hangul, fullwidth forms: what marks a text as Chinese-like for lang="auto".
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
# Character-level ROUGE tokens: runs of ASCII letters/digits stay whole, every other word
# character (a CJK character) is one token; punctuation and spaces are dropped.
_CHAR_TOKEN = re.compile(r"[0-9a-z]+|[^\W_]")


# ----------------------------------------------------------------------------- diagnosis


def _json_diagnosis(text: str) -> str | None:
    """The `diagnosis` string of the last JSON object in `text` that has one (nested included)."""
    if "{" not in text or "diagnosis" not in text.lower():
        return None
    decoder = json.JSONDecoder()
    found: str | None = None
    starts = [m.start() for m in re.finditer(r"\{", text)][:_MAX_JSON_STARTS]
    for start in starts:
        try:
            obj, _ = decoder.raw_decode(text, start)
        except ValueError:
            continue
        if isinstance(obj, dict):
            value = next((v for k, v in obj.items() if str(k).lower() == "diagnosis"), None)
            if isinstance(value, str) and value.strip():
                found = value.strip()
    return found


def raw_diagnosis(text: object) -> str | None:
    """The stated diagnosis as written: a JSON `diagnosis` field if the text holds one (the last
    such object), else the last `Diagnosis:` line (answer.parse_answer); None when neither."""
    if not isinstance(text, str) or not text.strip():
        return None
    return _json_diagnosis(text) or parse_answer(text)["diagnosis"]


def extract_diagnosis(text: object, kb: Any, *, strict: bool = False) -> str | None:
    """The answer's diagnosis, mapped to the KB's canonical name through its synonyms.

    A stated diagnosis that matches no KB condition is returned as written (it is an answer, and a
    wrong one: it can never equal a canonical gold name) unless `strict`, which returns None.
    None when the text states no diagnosis at all.
    """
    raw = raw_diagnosis(text)
    if raw is None:
        return None
    canonical = normalise_diagnosis(kb, raw)
    if canonical is not None or strict:
        return canonical
    return raw.strip().rstrip(".!").strip() or None


def fault_kind(text: object, kb: Any) -> str | None:
    """Why an answer is a fault case, None when it is not: "empty" (blank or not text),
    "degenerate_repetition" (validity.is_degenerate: a loop), "no_diagnosis" (no Diagnosis line or
    JSON diagnosis field). Checked in that order; a wrong but stated diagnosis is not a fault."""
    if not isinstance(text, str) or not text.strip():
        return "empty"
    if is_degenerate(text):
        return "degenerate_repetition"
    if extract_diagnosis(text, kb) is None:
        return "no_diagnosis"
    return None


# ----------------------------------------------------------------------------- intervals


def bootstrap_ci(
    values: Iterable[float] | np.ndarray,
    stat: Callable[..., Any] = np.mean,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> tuple[float, float] | None:
    """Percentile bootstrap interval (1 − alpha) of `stat` over `values`; None for no values.

    `stat` is called with `axis=1` on a (resamples, n) array when it accepts it (numpy reducers),
    else once per resample. Deterministic for a given seed.
    """
    arr = np.asarray(list(values) if not isinstance(values, np.ndarray) else values, dtype=float)
    n = arr.shape[0]
    if n == 0:
        return None
    if n_boot < 1:
        raise ValueError(f"n_boot must be >= 1, got {n_boot}")
    if not 0 < alpha < 1:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    rng = np.random.default_rng(seed)
    stats = _resampled_stats(rng, n, n_boot, lambda idx: _apply(stat, arr[idx]))
    lo, hi = np.quantile(stats, [alpha / 2, 1 - alpha / 2])
    return float(lo), float(hi)


def _apply(stat: Callable[..., Any], sample: np.ndarray) -> np.ndarray:
    try:
        return np.asarray(stat(sample, axis=1), dtype=float)
    except TypeError:
        return np.asarray([stat(row) for row in sample], dtype=float)


def _resampled_stats(
    rng: np.random.Generator, n: int, n_boot: int, stat_of: Callable[[np.ndarray], np.ndarray]
) -> np.ndarray:
    """stat_of(indices) for n_boot resamples of range(n), in memory-bounded chunks."""
    rows = max(1, _BOOT_CHUNK // max(n, 1))
    out = []
    done = 0
    while done < n_boot:
        k = min(rows, n_boot - done)
        out.append(stat_of(rng.integers(0, n, size=(k, n))))
        done += k
    return np.concatenate(out)


def paired_diff_ci(
    a: Sequence[float],
    b: Sequence[float],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Bootstrap interval of mean(a) − mean(b) where a[i], b[i] score the same case i (e.g. 0/1
    correctness of two models): cases are resampled jointly, so the pairing is kept.

    Returns {"diff", "diff_ci": [lo, hi], "n", "excludes_zero"}; diff/diff_ci None when n == 0.
    """
    xa = np.asarray(a, dtype=float)
    xb = np.asarray(b, dtype=float)
    if xa.shape != xb.shape or xa.ndim != 1:
        raise ValueError(f"a and b must be equally long 1-d sequences, got {xa.shape}, {xb.shape}")
    n = int(xa.shape[0])
    if n == 0:
        return {"diff": None, "diff_ci": None, "n": 0, "excludes_zero": False}
    rng = np.random.default_rng(seed)
    d = xa - xb
    stats = _resampled_stats(rng, n, n_boot, lambda idx: d[idx].mean(axis=1))
    lo, hi = (float(x) for x in np.quantile(stats, [alpha / 2, 1 - alpha / 2]))
    return {
        "diff": float(d.mean()),
        "diff_ci": [lo, hi],
        "n": n,
        "excludes_zero": bool(lo > 0 or hi < 0),
    }


# ----------------------------------------------------------------------------- accuracy


def correctness(preds: Sequence[str | None], golds: Sequence[str]) -> list[int]:
    """1 where the prediction equals the (canonical) gold, else 0; None never matches."""
    if len(preds) != len(golds):
        raise ValueError(f"{len(preds)} predictions for {len(golds)} gold labels")
    pairs = zip(preds, golds, strict=True)
    return [int(p is not None and g is not None and p == g) for p, g in pairs]


def accuracy(
    preds: Sequence[str | None],
    golds: Sequence[str],
    *,
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
) -> dict:
    """Exact-match accuracy of canonical names: {"accuracy", "accuracy_ci": [lo, hi], "n",
    "correct"}; accuracy and accuracy_ci are None when n == 0 (nothing was scored)."""
    hits = correctness(preds, golds)
    n = len(hits)
    ci = bootstrap_ci(hits, n_boot=n_boot, seed=seed, alpha=alpha)
    return {
        "accuracy": sum(hits) / n if n else None,
        "accuracy_ci": list(ci) if ci is not None else None,
        "n": n,
        "correct": sum(hits),
    }


# ----------------------------------------------------------------------------- text metrics


class CharTokenizer:
    """rouge-score tokenizer for CJK text: one token per CJK character, ASCII words kept whole.
    (rouge-score's default tokenizer keeps only [a-z0-9] and so drops Chinese entirely.)"""

    def tokenize(self, text: str) -> list[str]:
        return _CHAR_TOKEN.findall(text.lower())


def detect_lang(texts: Iterable[str]) -> str:
    """Language of `texts`: "zh" when CJK is over a fifth of non-space characters, else "en"."""
    cjk = total = 0
    for t in texts:
        stripped = re.sub(r"\s+", "", t or "")
        total += len(stripped)
        cjk += len(_CJK.findall(stripped))
    return "zh" if total and cjk / total > 0.2 else "en"


def text_metrics(
    hyps: Sequence[str],
    refs: Sequence[str],
    lang: str = "en",
    *,
    use_stemmer: bool = False,
) -> dict:
    """Corpus BLEU (sacrebleu, 0-100; tokenize "13a" for en, "zh" for zh) and mean ROUGE-L F1
    (rouge-score, 0-1; character-level tokens for zh). lang "auto" detects from the references.
    {"bleu": None, "rouge_l": None} for empty input."""
    import sacrebleu
    from rouge_score import rouge_scorer

    if len(hyps) != len(refs):
        raise ValueError(f"{len(hyps)} hypotheses for {len(refs)} references")
    if lang == "auto":
        lang = detect_lang(refs)
    if lang not in ("en", "zh"):
        raise ValueError(f"lang must be 'en', 'zh' or 'auto', got {lang!r}")
    if not hyps:
        return {"bleu": None, "rouge_l": None, "lang": lang}
    hyps = [h or "" for h in hyps]
    refs = [r or "" for r in refs]
    bleu = sacrebleu.corpus_bleu(hyps, [refs], tokenize="zh" if lang == "zh" else "13a")
    if lang == "zh":
        scorer = rouge_scorer.RougeScorer(["rougeL"], tokenizer=CharTokenizer())
    else:
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=use_stemmer)
    rouge = [scorer.score(r, h)["rougeL"].fmeasure for h, r in zip(hyps, refs, strict=True)]
    return {"bleu": float(bleu.score), "rouge_l": float(np.mean(rouge)), "lang": lang}


# ----------------------------------------------------------------------------- confusions


def confusion_summary(
    preds: Sequence[str | None], golds: Sequence[str], *, top_k: int = 20
) -> dict:
    """{"top_confusions": [[gold, pred, count], ...] (most frequent wrong pairs first; pred None =
    no diagnosis), "per_condition": {gold: {"n", "correct", "accuracy"}}} (sorted by name)."""
    hits = correctness(preds, golds)
    wrong = Counter((g, p) for p, g, h in zip(preds, golds, hits, strict=True) if not h)
    ordered = sorted(wrong.items(), key=lambda kv: (-kv[1], kv[0][0], kv[0][1] or ""))
    per: dict[str, dict] = {}
    for g, h in zip(golds, hits, strict=True):
        row = per.setdefault(g, {"n": 0, "correct": 0})
        row["n"] += 1
        row["correct"] += h
    for row in per.values():
        row["accuracy"] = row["correct"] / row["n"]
    return {
        "top_confusions": [[g, p, c] for (g, p), c in ordered[:top_k]],
        "per_condition": {k: per[k] for k in sorted(per)},
    }


# ----------------------------------------------------------------------------- one model


def sample_gold(sample: Mapping[str, Any]) -> str | None:
    """A sample's gold diagnosis as stored: top-level "gold", else meta.condition, else
    meta.structured.diagnosis; None when the sample has none (e.g. general-domain data)."""
    if isinstance(sample.get("gold"), str):
        return sample["gold"]
    meta = sample.get("meta") or {}
    if isinstance(meta.get("condition"), str):
        return meta["condition"]
    structured = meta.get("structured") or {}
    value = structured.get("diagnosis") if isinstance(structured, dict) else None
    return value if isinstance(value, str) else None


def evaluate_predictions(
    samples: Sequence[Mapping[str, Any]],
    predictions: Mapping[str, str],
    kb: Any,
    *,
    lang: str = "en",
    n_boot: int = 1000,
    seed: int = 0,
    alpha: float = 0.05,
    top_k: int = 20,
) -> dict:
    """Score one model's answers (`predictions`: sample id -> generated text) on `samples`.

    Accuracy (+ bootstrap CI) over samples whose gold resolves in the KB; fault cases over all
    samples; BLEU / ROUGE-L against each sample's reference `output`; a confusion summary; and
    per-sample rows {"id", "gold", "pred", "correct", "fault"} (correct None where there is no
    gold). Raises KeyError when a sample has no prediction: a missing answer is a bug upstream.
    """
    missing = [s["id"] for s in samples if s["id"] not in predictions]
    if missing:
        raise KeyError(f"{len(missing)} samples have no prediction, e.g. {missing[:5]}")
    rows: list[dict] = []
    preds: list[str | None] = []
    golds: list[str] = []
    unresolved = 0
    for s in samples:
        text = predictions[s["id"]]
        raw_gold = sample_gold(s)
        gold = kb.normalise(raw_gold) if raw_gold is not None else None
        if raw_gold is not None and gold is None:
            unresolved += 1
        pred = extract_diagnosis(text, kb)
        correct = None if gold is None else bool(pred is not None and pred == gold)
        rows.append(
            {
                "id": s["id"],
                "gold": gold,
                "pred": pred,
                "correct": correct,
                "fault": fault_kind(text, kb),
            }
        )
        if gold is not None:
            preds.append(pred)
            golds.append(gold)
    n = len(rows)
    faults = Counter(r["fault"] for r in rows if r["fault"] is not None)
    n_faults = sum(faults.values())
    texts = text_metrics(
        [predictions[s["id"]] or "" for s in samples],
        [s.get("output") or "" for s in samples],
        lang,
    )
    acc = accuracy(preds, golds, n_boot=n_boot, seed=seed, alpha=alpha)
    return {
        "n": n,
        "n_scored": acc["n"],
        "accuracy": acc["accuracy"],
        "accuracy_ci": acc["accuracy_ci"],
        "correct": acc["correct"],
        "unresolved_gold": unresolved,
        "fault_cases": n_faults,
        "fault_rate": n_faults / n if n else None,
        "faults": {k: faults.get(k, 0) for k in FAULT_KINDS},
        "bleu": texts["bleu"],
        "rouge_l": texts["rouge_l"],
        "lang": texts["lang"],
        "confusion": confusion_summary(preds, golds, top_k=top_k),
        "rows": rows,
    }

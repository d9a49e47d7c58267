"""A diagnosis score that does not depend on the answer's format: rank every KB condition.

The model's own answer is cut before its first `Diagnosis:` line and `Diagnosis:` is appended;
each candidate condition's name plus the line end (" Name\\n") is then scored by its summed
log-likelihood, lm-evaluation-harness's loglikelihood multiple-choice method (the context's
trailing space moves into the continuation, as the harness does). The gold condition's rank
gives `ranked_accuracy` (rank 1), `top3` and `mrr`. An answer that never writes a Diagnosis
line still gets a rank, so a base model that has not learnt the format scores what it knows.

Not length-normalised (the harness's `acc`, not `acc_norm`): once a name's first token is
chosen its remaining tokens are near-certain, so the sum is close to the probability of naming
that condition; dividing by the name's length would favour long names for that reason alone.
The body runs in the model's dtype (bf16 where the loader picks it), the output head and the
softmax in float32.

Cost: the prefix (prompt + cut answer) runs once per case, batched over cases and kept as a KV
cache; all candidates of a case are then packed into ONE row after that cache as a token trie
(names sharing leading tokens share those nodes), each node attending to the prefix and to its
ancestors only (a 4-D mask, positions = prefix length + depth), so K candidates cost fewer
tokens than their names and never copy the cache.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cift.data.answer import DIAGNOSIS, DIAGNOSIS_LINE
from cift.evaluate.metrics import bootstrap_ci
from cift.io.jsonl import KeyedLog

METHOD = "loglik-sum-v1"  # part of the cache key: change it when the scoring changes
LINE_END = "\n"
RANKED_KEYS = ("ranked_accuracy", "top3", "mrr")


def answer_prefix(answer: str | None) -> str:
    """The answer up to (not including) its first Diagnosis line, then "Diagnosis: "."""
    text = answer or ""
    m = DIAGNOSIS_LINE.search(text)
    cut = text[: m.start()] if m else text
    cut = cut.rstrip()
    return (cut + "\n" if cut else "") + f"{DIAGNOSIS} "


def split_pair(context: str, continuation: str) -> tuple[str, str]:
    """lm-evaluation-harness's `_encode_pair` convention: trailing spaces of the context belong
    to the continuation (BPE tokenisers attach a space to the next word)."""
    n = len(context) - len(context.rstrip(" "))
    if n:
        return context[:-n], context[-n:] + continuation
    return context, continuation


@dataclass(frozen=True)
class Encoded:
    """One case: its context ids and each candidate's continuation ids."""

    context: list[int]
    continuations: list[list[int]]


def encode_case(tokenizer: Any, context: str, candidates: Sequence[str]) -> Encoded:
    """Context ids, and each candidate's continuation ids taken from encoding context +
    continuation whole (the harness's way: the split follows the tokeniser's merges)."""
    ctx_text, _ = split_pair(context, "")
    ctx = tokenizer(ctx_text, add_special_tokens=False)["input_ids"]
    conts = []
    for name in candidates:
        c_text, cont_text = split_pair(context, name + LINE_END)
        whole = tokenizer(c_text + cont_text, add_special_tokens=False)["input_ids"]
        if whole[: len(ctx)] == ctx and len(whole) > len(ctx):
            conts.append(whole[len(ctx) :])
        else:  # a merge across the boundary: encode the continuation alone
            conts.append(tokenizer(cont_text, add_special_tokens=False)["input_ids"])
    return Encoded(ctx, conts)


def loglikelihoods(
    model: Any, cases: Sequence[Encoded], *, max_tokens: int = 8192
) -> list[list[float]]:
    """Summed log-probability of every continuation of every case given its context.

    Cases are sorted by length and batched so that a batch holds about `max_tokens` tokens
    (prefix + candidates per case). Per batch: one forward over the right-padded prefixes (all
    but their last token) that keeps the KV cache, then one forward over each case's candidates
    as one row: a token trie rooted at the last context token, each node masked to see the
    cached prefix and its own ancestors only.
    """
    import torch

    out: list[list[float] | None] = [None] * len(cases)
    order = sorted(range(len(cases)), key=lambda i: -_case_tokens(cases[i]))
    batch: list[int] = []
    widest = 0
    for i in order:
        width = _case_tokens(cases[i])
        if batch and max(widest, width) * (len(batch) + 1) > max_tokens:
            _score_batch(model, [cases[j] for j in batch], out, batch, torch)
            batch, widest = [], 0
        batch.append(i)
        widest = max(widest, width)
    if batch:
        _score_batch(model, [cases[j] for j in batch], out, batch, torch)
    return out  # type: ignore[return-value]


def _case_tokens(case: Encoded) -> int:
    """An upper bound of the tokens one case puts through the model (trie sharing aside)."""
    return len(case.context) + 1 + sum(len(c) for c in case.continuations)


def _score_batch(model: Any, cases: list[Encoded], out: list, where: list[int], torch: Any) -> None:
    from transformers import DynamicCache

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    for case in cases:
        if len(case.context) < 1:
            raise ValueError("ranked scoring needs a non-empty context")
        if any(len(c) == 0 for c in case.continuations):
            raise ValueError("a candidate continuation encodes to no tokens")
    b = len(cases)
    pad = 0
    # prefix: every context token but the last, right-padded; positions 0..len-1
    plen = [len(c.context) - 1 for c in cases]
    p_width = max(max(plen), 1)
    p_ids = torch.full((b, p_width), pad, dtype=torch.long)
    p_allowed = torch.zeros((b, p_width, p_width), dtype=torch.bool)
    causal = torch.tril(torch.ones((p_width, p_width), dtype=torch.bool))
    for r, c in enumerate(cases):
        p_ids[r, : plen[r]] = torch.tensor(c.context[:-1], dtype=torch.long)
        p_allowed[r, :, : plen[r]] = causal[:, : plen[r]]
        for q in range(plen[r], p_width):  # padding attends to itself only (never NaN)
            p_allowed[r, q, q] = True
    # the candidates of a case as one token trie after the prefix: node 0 = the last context
    # token, every other node one continuation token; a node sees the prefix and its ancestors
    tries = [_Trie(c.context[-1], c.continuations) for c in cases]
    c_width = max(len(t.tokens) for t in tries)
    c_ids = torch.full((b, c_width), pad, dtype=torch.long)
    c_pos = torch.zeros((b, c_width), dtype=torch.long)
    allowed = torch.zeros((b, c_width, p_width + c_width), dtype=torch.bool)
    for r, trie in enumerate(tries):
        n = len(trie.tokens)
        c_ids[r, :n] = torch.tensor(trie.tokens, dtype=torch.long)
        c_pos[r, :n] = plen[r] + torch.tensor(trie.depth, dtype=torch.long)
        allowed[r, :n, : plen[r]] = True  # the shared prefix
        for i, line in enumerate(trie.ancestors):
            allowed[r, i, [p_width + j for j in line]] = True
        for q in range(n, c_width):  # padding attends to itself only (never NaN)
            allowed[r, q, p_width + q] = True
    body = model.get_decoder()  # the prefix needs only its KV cache, never vocabulary logits
    with torch.inference_mode():
        cache = DynamicCache()
        body(
            input_ids=p_ids.to(device),
            attention_mask=_additive(p_allowed, dtype).to(device),
            position_ids=torch.arange(p_width)[None].expand(b, -1).to(device),
            use_cache=True,
            **{_cache_kwarg(body): cache},
        )
        hidden = body(
            input_ids=c_ids.to(device),
            attention_mask=_additive(allowed, dtype).to(device),
            position_ids=c_pos.to(device),
            use_cache=True,
            **{_cache_kwarg(body): cache},
        ).last_hidden_state
    # every trie edge once through the vocabulary head: log p(child token | parent's state)
    rows = [r for r, t in enumerate(tries) for _ in t.tokens[1:]]
    cols = [p for t in tries for p in t.parent[1:]]
    tgt = [tok for t in tries for tok in t.tokens[1:]]
    picked = hidden[torch.tensor(rows, device=device), torch.tensor(cols, device=device)]
    edge = _token_logprobs(model, picked, torch.tensor(tgt, device=device)).tolist()
    at = 0
    for r, trie in enumerate(tries):
        node_logp = [0.0, *edge[at : at + len(trie.tokens) - 1]]
        at += len(trie.tokens) - 1
        out[where[r]] = [sum(node_logp[i] for i in path) for path in trie.paths]


class _Trie:
    """Continuations sharing their leading tokens, flattened in creation order (a parent always
    before its children): tokens, parent index, depth, ancestors-and-self, and each
    continuation's path of node indices (its tokens' nodes, the root excluded)."""

    def __init__(self, root: int, continuations: Sequence[Sequence[int]]) -> None:
        self.tokens, self.parent, self.depth = [root], [-1], [0]
        self.ancestors: list[list[int]] = [[0]]
        self.paths: list[list[int]] = []
        child: dict[tuple[int, int], int] = {}
        for cont in continuations:
            node, path = 0, []
            for tok in cont:
                if (node, tok) not in child:
                    child[(node, tok)] = len(self.tokens)
                    self.tokens.append(tok)
                    self.parent.append(node)
                    self.depth.append(self.depth[node] + 1)
                    self.ancestors.append([*self.ancestors[node], len(self.tokens) - 1])
                node = child[(node, tok)]
                path.append(node)
            self.paths.append(path)


def _token_logprobs(model: Any, hidden: Any, target: Any, chunk: int = 1024) -> Any:
    """log p(target | hidden) through the model's output head in float32 (a bf16 body is fine,
    bf16 logits are not: their rounding is the size of the gaps between close candidates),
    `chunk` positions at a time (vocabulary-wide logits of a whole batch would not fit)."""
    import torch
    import torch.nn.functional as F

    head = model.get_output_embeddings()
    weight = head.weight.float()
    bias = head.bias.float() if getattr(head, "bias", None) is not None else None
    parts = []
    with torch.inference_mode():
        for i in range(0, hidden.shape[0], chunk):
            logits = F.linear(hidden[i : i + chunk].float(), weight, bias)
            t = target[i : i + chunk]
            parts.append(logits.gather(1, t[:, None])[:, 0] - torch.logsumexp(logits, dim=-1))
    return torch.cat(parts) if parts else torch.zeros(0)


def _cache_kwarg(model: Any) -> str:
    """The forward argument that takes a KV cache: `cache` in newer transformers (which warn on
    the old name), `past_key_values` before."""
    import inspect

    params = inspect.signature(model.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def _additive(allowed: Any, dtype: Any) -> Any:
    """(b, q, k) booleans -> the (b, 1, q, k) additive mask every attention backend accepts."""
    import torch

    mask = torch.zeros(allowed.shape, dtype=dtype)
    return mask.masked_fill_(~allowed, torch.finfo(dtype).min)[:, None]


def naive_loglikelihoods(model: Any, case: Encoded) -> list[float]:
    """The reference: one full forward per candidate over context + continuation (tests)."""
    import torch

    device = next(model.parameters()).device
    scores = []
    with torch.inference_mode():
        for cont in case.continuations:
            ids = torch.tensor([case.context + cont], device=device)
            logp = torch.log_softmax(model(input_ids=ids).logits.float(), dim=-1)[0]
            n = len(case.context)
            scores.append(
                float(sum(logp[n - 1 + j, t] for j, t in enumerate(cont)))  # type: ignore[misc]
            )
    return scores


def gold_rank(scores: Sequence[float], candidates: Sequence[str], gold: str) -> int:
    """1-based rank of `gold` by score, ties counted against it (no credit for a flat model)."""
    g = scores[candidates.index(gold)]
    return 1 + sum(1 for name, s in zip(candidates, scores, strict=True) if name != gold and s >= g)


def rank_cases(
    model: Any,
    tokenizer: Any,
    prompts: Sequence[str],
    answers: Sequence[str | None],
    candidates: Sequence[str],
    *,
    max_tokens: int = 8192,
) -> list[list[float]]:
    """Per case, the log-likelihood of every candidate after prompt + answer_prefix(answer).

    `prompts` are the chat-templated prompt texts (generation prompt included); the pure core
    of ranked scoring: a loaded model and tokenizer in, numbers out.
    """
    if len(prompts) != len(answers):
        raise ValueError(f"{len(prompts)} prompts for {len(answers)} answers")
    if not candidates:
        raise ValueError("no candidate conditions to rank")
    encoded = [
        encode_case(tokenizer, p + answer_prefix(a), candidates)
        for p, a in zip(prompts, answers, strict=True)
    ]
    return loglikelihoods(model, encoded, max_tokens=max_tokens)


# ----------------------------------------------------------------------------- metrics


def ranked_metrics(
    ranks: Sequence[int | None], *, n_boot: int = 1000, seed: int = 0, alpha: float = 0.05
) -> dict:
    """ranked_accuracy / top3 / mrr with percentile-bootstrap intervals over cases with a rank
    (None ranks: no gold among the candidates, excluded and counted in `n_unranked`)."""
    got = np.asarray([r for r in ranks if r is not None], dtype=float)
    per = {"ranked_accuracy": got == 1, "top3": got <= 3, "mrr": 1.0 / got if got.size else got}
    out: dict[str, Any] = {"n_ranked": int(got.size), "n_unranked": len(ranks) - int(got.size)}
    for name, values in per.items():
        values = np.asarray(values, dtype=float)
        ci = bootstrap_ci(values, n_boot=n_boot, seed=seed, alpha=alpha)
        out[name] = float(values.mean()) if values.size else None
        out[f"{name}_ci"] = list(ci) if ci is not None else None
    return out


# ----------------------------------------------------------------------------- cache


def rank_key(answer_key: str, answer: str | None, candidates: Sequence[str]) -> str:
    """One case's ranking, keyed by its answer's cache key, the answer text and the candidates."""
    parts = [METHOD, answer_key, answer or "", list(candidates)]
    return hashlib.sha256(json.dumps(parts, ensure_ascii=False).encode()).hexdigest()


class RankCache:
    """Ranked scores per version key next to the answer cache (`KeyedLog`)."""

    def __init__(self, folder: str | Path | None) -> None:
        self.log = KeyedLog(folder, "scores", suffix=".ranked.jsonl")
        self.folder = self.log.folder

    def load(self, version_key: str) -> dict[str, list[float]]:
        return self.log.load(version_key)

    def add(self, version_key: str, rows: Mapping[str, list[float]]) -> None:
        self.log.add(version_key, rows.items())

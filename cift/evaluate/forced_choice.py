"""A local model as a forced-choice judge: the verdict is read from the log-probabilities of the
label tokens after the judge prompt, never parsed from generated text.

A 135M model asked to explain and then write "[[A]]" rarely writes a verdict at all; asked for
the probability of each label after a prefilled "My final verdict: [[", it always answers. Labels
that are one token after the prompt cost one forward pass per batch of prompts (the last
position's logits only); labels of several tokens are scored as full continuations
(lm-evaluation-harness's loglikelihood), one forward pass per batch of prompt + label sequences.
Batches are length-sorted and left-padded; the weights load in bf16 where the hardware has fast
bf16 (`model.dtype: auto`), and log-softmax runs in float32.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from typing import Any

from cift.models import LoadedModel, ModelSpec
from cift.models.chat import chat_prompt
from cift.models.loading import resolve_device
from cift.progress import progress


def load_judge_model(spec: ModelSpec, device: str) -> LoadedModel:
    """The judge's weights and tokenizer through the project's version loader (the base)."""
    from cift.models.version import load_version

    return load_version(spec, None, device=device)


class LocalJudge:
    """`label_logprobs` over a local causal LM: log P(label | chat-templated prompt)."""

    def __init__(
        self, model: ModelSpec, name: str = "local-judge", batch_size: int = 8, device: str = "auto"
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"judge.backend.batch_size must be >= 1, got {batch_size}")
        self.spec = model
        self.name = name
        self.batch_size = batch_size
        self.device = resolve_device(device)
        self._loaded: LoadedModel | None = None
        self.forward_passes = 0  # batches run, so a test can tell batching from a per-sample loop
        self.seconds = 0.0

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = load_judge_model(self.spec, self.device)
        return self._loaded

    def prompt_text(self, request: Any) -> str:
        """Chat-templated prompt of a request (`.messages`, as a TeacherRequest has); a trailing
        assistant message is the reply's prefill."""
        return chat_prompt(self.loaded.tokenizer, request.messages)

    def _continuation(self, context: list[int], prompt: str, label: str) -> list[int]:
        """The label's tokens as they follow `prompt` (tokenised together, so a merge across the
        boundary is seen); the label alone when the joint tokenisation changes the prompt's."""
        tok = self.loaded.tokenizer
        whole = tok(prompt + label, add_special_tokens=False)["input_ids"]
        if whole[: len(context)] == context and len(whole) > len(context):
            return whole[len(context) :]
        return tok(label, add_special_tokens=False)["input_ids"]

    def label_logprobs(self, requests: Sequence[Any], labels: Sequence[str]) -> list[list[float]]:
        """Per request, the summed log-probability of each label's tokens after the prompt."""
        if not labels:
            raise ValueError("label_logprobs needs at least one label")
        if not requests:
            return []
        tok = self.loaded.tokenizer
        prompts = [self.prompt_text(r) for r in requests]
        contexts = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        conts = [
            [self._continuation(ctx, p, label) for label in labels]
            for ctx, p in zip(contexts, prompts, strict=True)
        ]
        started = time.perf_counter()
        if all(len(c) == 1 for row in conts for c in row):
            out = self._next_token(contexts, [[c[0] for c in row] for row in conts])
        else:
            out = self._full_sequences(contexts, conts)
        self.seconds += time.perf_counter() - started
        return out

    def _forward(self, seqs: list[list[int]], keep: int):
        """Log-softmax (float32) of the last `keep` positions of a left-padded batch."""
        import torch

        tok = self.loaded.tokenizer
        tok.padding_side = "left"
        enc = tok.pad({"input_ids": seqs}, return_tensors="pt")
        ids, mask = enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)
        positions = (mask.cumsum(-1) - 1).clamp(min=0)  # left padding must not shift positions
        with torch.inference_mode():
            logits = self.loaded.model(
                input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep
            ).logits
        self.forward_passes += 1
        return torch.log_softmax(logits.float(), dim=-1).cpu()

    def _batches(self, lengths: list[int]) -> Iterable[list[int]]:
        """Length-sorted batches of indices (little padding), with a progress bar."""
        order = sorted(range(len(lengths)), key=lambda i: lengths[i])
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        return progress(batches, desc=f"{self.name} verdicts", unit="batch")

    def _next_token(self, contexts: list[list[int]], label_ids: list[list[int]]):
        out: list[list[float] | None] = [None] * len(contexts)
        for batch in self._batches([len(c) for c in contexts]):
            logp = self._forward([contexts[i] for i in batch], keep=1)[:, -1]
            for row, i in enumerate(batch):
                out[i] = [float(logp[row, t]) for t in label_ids[i]]
        return out

    def _full_sequences(self, contexts: list[list[int]], conts: list[list[list[int]]]):
        seqs = [(i, j) for i, row in enumerate(conts) for j in range(len(row))]
        full = [contexts[i] + conts[i][j] for i, j in seqs]
        out = [[0.0] * len(row) for row in conts]
        for batch in self._batches([len(s) for s in full]):
            width = max(len(conts[seqs[k][0]][seqs[k][1]]) for k in batch)
            # position p's logits predict token p + 1: the label's k tokens need the k before them
            logp = self._forward([full[k] for k in batch], keep=width + 1)
            for row, k in enumerate(batch):
                i, j = seqs[k]
                cont = conts[i][j]
                steps = logp[row, -len(cont) - 1 : -1]
                out[i][j] = float(sum(steps[n, t] for n, t in enumerate(cont)))
        return out

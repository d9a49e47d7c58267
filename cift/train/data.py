"""Training data: chat-template tokenisation with a response-only loss mask, the replay mix, and a
LightningDataModule with length-grouped, dynamically padded, reproducible batches.

A sample is rendered as system message + user turn (`user_message`) + assistant header (the
prompt, label -100) followed by the response and the template's end-of-turn token (supervised).
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader

from cift.data.sample import student_messages

IGNORE = -100
GROUP_BATCHES = 16  # batches per length-sorted group: padding stays small, order stays random


class EmptyResponseMaskError(ValueError):
    """A sample (or a whole batch) would train on no token: wrong template or empty response."""


@dataclass
class Example:
    """One tokenised sample: ids, labels (-100 on the prompt) and whether it was truncated."""

    id: str
    input_ids: list[int]
    labels: list[int]
    truncated: bool
    replay: bool = False

    @property
    def n_supervised(self) -> int:
        return sum(1 for x in self.labels if x != IGNORE)


def chat_texts(tokenizer: Any, sample: dict, system_prompt: str) -> tuple[str, str]:
    """(prompt text, full text): system + user turn + assistant header, and the same + response."""
    messages = student_messages(sample, system_prompt)
    prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    full = tokenizer.apply_chat_template(
        [*messages, {"role": "assistant", "content": sample["output"]}], tokenize=False
    )
    return prompt, full


def tokenize_sample(
    tokenizer: Any, sample: dict, system_prompt: str, max_length: int, *, replay: bool = False
) -> Example:
    """Tokenise one sample with the model's chat template; labels = -100 on prompt tokens.

    The response and its end-of-turn token are supervised; whitespace the template adds after the
    end-of-turn token is dropped. Over `max_length`: the prompt is cut from the left (keeping at
    least half of `max_length`), then the response from the right; `truncated` records it.
    """
    sid = str(sample.get("id", "?"))
    if not str(sample.get("output", "")).strip():
        raise EmptyResponseMaskError(f"sample {sid}: empty response (nothing to train on)")
    prompt, full = chat_texts(tokenizer, sample, system_prompt)
    if not full.startswith(prompt):
        raise EmptyResponseMaskError(
            f"sample {sid}: the chat template's assistant turn does not extend its generation "
            "prompt, so the response tokens cannot be located (unsupported template)"
        )
    enc = tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
    ids, offsets = enc["input_ids"], enc["offset_mapping"]
    n_prompt = sum(1 for start, _ in offsets if start < len(prompt))
    end = len(ids)
    while end > n_prompt and not tokenizer.decode(ids[end - 1 : end]).strip():
        end -= 1  # the newline after <|im_end|> is template decoration, not the answer
    prompt_ids, response_ids = ids[:n_prompt], ids[n_prompt:end]
    if not response_ids:
        raise EmptyResponseMaskError(
            f"sample {sid}: the response mask is empty after applying the chat template"
        )
    truncated = len(prompt_ids) + len(response_ids) > max_length
    if truncated:
        keep_prompt = max(max_length - len(response_ids), min(len(prompt_ids), max_length // 2))
        prompt_ids = prompt_ids[len(prompt_ids) - keep_prompt :]
        response_ids = response_ids[: max_length - len(prompt_ids)]
    return Example(
        id=sid,
        input_ids=prompt_ids + response_ids,
        labels=[IGNORE] * len(prompt_ids) + response_ids,
        truncated=truncated,
        replay=replay,
    )


def tokenize_samples(
    tokenizer: Any,
    samples: Sequence[dict],
    system_prompt: str,
    max_length: int,
    *,
    replay_flags: Sequence[bool] | None = None,
) -> list[Example]:
    """`tokenize_sample` over a list (raises on the first sample with an empty response mask)."""
    flags = replay_flags or [False] * len(samples)
    return [
        tokenize_sample(tokenizer, s, system_prompt, max_length, replay=f)
        for s, f in zip(samples, flags, strict=True)
    ]


def replay_count(n_domain: int, ratio: float) -> int:
    """Replay samples mixed into `n_domain` domain samples at `train.mix_ratio` = `ratio`."""
    if ratio < 0:
        raise ValueError(f"train.mix_ratio must be >= 0, got {ratio}")
    return round(ratio * n_domain)


def mix_replay(
    domain: Sequence[dict], replay: Sequence[dict], ratio: float, seed: int
) -> tuple[list[dict], list[bool], dict]:
    """Domain samples plus `round(ratio * len(domain))` general-domain replay samples (1.0 = 1:1).

    Every replay sample is used once before any repeats; when there are too few, the rest are
    drawn with replacement. Returns (samples, is_replay flags, counts).
    """
    want = replay_count(len(domain), ratio)
    if want and not replay:
        raise ValueError(f"train.mix_ratio={ratio} needs replay samples, but none were given")
    rng = random.Random(f"replay-{seed}")
    pool = list(replay)
    if want <= len(pool):
        chosen = rng.sample(pool, want)
    else:
        chosen = pool + rng.choices(pool, k=want - len(pool))
    samples = list(domain) + chosen
    flags = [False] * len(domain) + [True] * len(chosen)
    counts = {
        "domain": len(domain),
        "replay": len(chosen),
        "replay_available": len(pool),
        "replay_unique": len({id(s) for s in chosen}),
        "with_replacement": want > len(pool),
        "ratio": ratio,
    }
    return samples, flags, counts


def batches_per_rank(n_examples: int, batch_size: int, world_size: int = 1) -> int:
    """Batches one rank trains on per epoch (ranks get equal counts; a remainder is dropped)."""
    n = -(-n_examples // batch_size)
    return n // world_size if world_size > 1 else n


class _EpochHook:
    def __init__(self, owner: LengthGroupedBatchSampler) -> None:
        self.owner = owner

    def set_epoch(self, epoch: int) -> None:
        self.owner.set_epoch(epoch)


class LengthGroupedBatchSampler:
    """Batches of similar length in a seeded random order, split across ranks.

    Each epoch: shuffle (seed, epoch), cut into groups of `GROUP_BATCHES` batches, sort each group
    by length, cut into batches, shuffle the batches. `resume` skips the batches of an epoch that a
    checkpoint already trained on, so a killed fit continues where it stopped.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        seed: int,
        *,
        rank: int = 0,
        world_size: int = 1,
        group_batches: int = GROUP_BATCHES,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size, self.seed = batch_size, seed
        self.rank, self.world_size = rank, world_size
        self.group = batch_size * group_batches
        self.epoch = 0
        self.skip = 0
        # Lightning calls set_epoch on `batch_sampler.sampler`, not on the batch sampler itself
        self.sampler = _EpochHook(self)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def resume(self, epoch: int, batches_done: int) -> None:
        self.epoch, self.skip = epoch, batches_done

    def batches(self, epoch: int) -> list[list[int]]:
        """All batches of `epoch` for this rank (equal counts on every rank)."""
        rng = random.Random(self.seed * 100_003 + epoch)
        order = list(range(len(self.lengths)))
        rng.shuffle(order)
        out: list[list[int]] = []
        for g in range(0, len(order), self.group):
            group = sorted(order[g : g + self.group], key=lambda i: self.lengths[i], reverse=True)
            out += [group[b : b + self.batch_size] for b in range(0, len(group), self.batch_size)]
        rng.shuffle(out)
        per_rank = len(out) // self.world_size if self.world_size > 1 else len(out)
        return out[self.rank :: self.world_size][:per_rank]

    def __len__(self) -> int:
        return batches_per_rank(len(self.lengths), self.batch_size, self.world_size)

    def __iter__(self) -> Iterator[list[int]]:
        epoch, skip = self.epoch, self.skip
        self.skip = 0
        yield from self.batches(epoch)[skip:]


def collate(examples: Sequence[Example], pad_id: int, multiple_of: int = 8) -> dict:
    """Right-pad to the batch maximum (rounded up to `multiple_of`); labels padded with -100."""
    width = max(len(e.input_ids) for e in examples)
    width = -(-width // multiple_of) * multiple_of
    ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    mask = torch.zeros((len(examples), width), dtype=torch.long)
    for row, e in enumerate(examples):
        n = len(e.input_ids)
        ids[row, :n] = torch.tensor(e.input_ids)
        labels[row, :n] = torch.tensor(e.labels)
        mask[row, :n] = 1
    if not (labels[:, 1:] != IGNORE).any():
        raise EmptyResponseMaskError(
            f"batch of samples {[e.id for e in examples]}: zero supervised tokens"
        )
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


class _ResumableLoader(DataLoader):
    """A DataLoader whose position (epoch, batches trained) is saved in Lightning checkpoints."""

    def __init__(self, *args: Any, progress: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._progress = progress

    def state_dict(self) -> dict:
        epoch, done = self._progress()
        return {"epoch": epoch, "batches_done": done}

    def load_state_dict(self, state: dict) -> None:
        epoch, done = int(state["epoch"]), int(state["batches_done"])
        if done >= len(self.batch_sampler):  # saved at the end of an epoch: start the next one
            epoch, done = epoch + 1, 0
        self.batch_sampler.resume(epoch, done)


class SFTDataModule(L.LightningDataModule):
    """Tokenised examples -> length-grouped, dynamically padded training batches."""

    def __init__(self, examples: Sequence[Example], batch_size: int, pad_id: int, seed: int):
        super().__init__()
        if not examples:
            raise ValueError("no training samples")
        self.examples = list(examples)
        self.batch_size, self.pad_id, self.seed = batch_size, pad_id, seed

    def batches_per_epoch(self, world_size: int = 1) -> int:
        return batches_per_rank(len(self.examples), self.batch_size, world_size)

    def _progress(self) -> tuple[int, int]:
        trainer = self.trainer
        return trainer.current_epoch, trainer.fit_loop.epoch_loop.batch_progress.current.processed

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        rank, world = (trainer.global_rank, trainer.world_size) if trainer else (0, 1)
        sampler = LengthGroupedBatchSampler(
            [len(e.input_ids) for e in self.examples],
            self.batch_size,
            self.seed,
            rank=rank,
            world_size=world,
        )
        return _ResumableLoader(
            self.examples,
            batch_sampler=sampler,
            collate_fn=lambda batch: collate(batch, self.pad_id),
            progress=self._progress,
        )

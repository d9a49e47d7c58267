"""The decoding settings of one generation, shared by every local generator (teachers,
evaluation, replay, serving); torch-free so that request parsing and cache keys stay cheap."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Sampling:
    """Greedy when `temperature` ≤ 0. A row ends at `max_new_tokens`, an end-of-turn token, one
    of its `stop` strings (cut from the text) or, with `stop_after_line` (e.g. "Advice:"), once
    a line starting with that marker has content and has ended. `seed` seeds the first batch
    (batch b gets seed + b); None leaves the generator's state alone."""

    max_new_tokens: int = 320
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = 0
    stop: tuple[str, ...] = ()
    stop_after_line: str | None = None
    repetition_penalty: float = 1.0  # a sampling aid only: ignored when greedy

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"max_new_tokens: {self.max_new_tokens} (must be ≥ 1)")
        if not isinstance(self.stop, tuple):  # a list from a config or a single string
            stop = (self.stop,) if isinstance(self.stop, str) else tuple(self.stop)
            object.__setattr__(self, "stop", stop)

    @property
    def greedy(self) -> bool:
        return self.temperature <= 0

    def group_key(self) -> tuple:
        """Rows that can share one `generate` call (token limits and stops are per row)."""
        if self.greedy:
            return ("greedy",)
        return ("sample", self.temperature, self.top_p, self.seed, self.repetition_penalty)

    def key_parts(self) -> dict:
        """What makes an answer differ (the evaluation cache's key): the sampling knobs only
        when sampling, and no stop marker as the empty string."""
        parts = {
            "max_new_tokens": self.max_new_tokens,
            "temperature": self.temperature,
            "top_p": self.top_p if self.temperature > 0 else None,
            "seed": self.seed if self.temperature > 0 else None,
            "stop_after_line": self.stop_after_line or "",
        }
        if self.stop:  # only when set, so that keys written before it existed still match
            parts["stop"] = list(self.stop)
        if self.repetition_penalty != 1.0 and self.temperature > 0:
            parts["repetition_penalty"] = self.repetition_penalty
        return parts

"""The filter-step interface: one step = one module; stats and verdicts are data, per sample.

A filter run passes the samples through `filter.steps` in order. Each step sees only the samples
still kept, writes its scores into their stats rows, and returns the ids it drops with a reason.
Every input sample ends with exactly one verdict: kept, or dropped by the step that dropped it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass
class FilterContext:
    """What steps may need besides the samples: the proxy and run-wide settings."""

    system_prompt: str = ""
    proxy: Any = None  # a cift.models.ModelSpec (the proxy's base model)
    proxy_adapter: str | None = None  # a PEFT adapter folder on top of the base, if any
    seed: int = 0
    n_in: int = 0  # samples that entered the filter stage (selection fractions refer to it)
    extra: dict = field(default_factory=dict)


class FilterStep(Protocol):
    name: str

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        """Score `samples` into `stats[sample_id]` (adding keys and to its "flags" list) and
        return {sample_id: reason} for the samples this step drops."""
        ...

"""Length filter (SPEC §1, step 1): keep responses with at least `min_sentences` sentences."""

from __future__ import annotations

from cift.filters.base import FilterContext
from cift.filters.sentences import split_sentences


class LengthFilter:
    """Stats `n_sentences`; drops responses shorter than `min_sentences` ("too_few_sentences")."""

    def __init__(self, min_sentences: int = 3, name: str = "length") -> None:
        if min_sentences < 0:
            raise ValueError(f"min_sentences must be >= 0, got {min_sentences}")
        self.min_sentences = int(min_sentences)
        self.name = name

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        dropped: dict[str, str] = {}
        for sample in samples:
            n = len(split_sentences(sample["output"]))
            stats[sample["id"]]["n_sentences"] = n
            if n < self.min_sentences:
                dropped[sample["id"]] = "too_few_sentences"
        return dropped

"""Semantic-diversity filter (SPEC §1, step 2): Div(y) = 1 − mean pairwise cosine of sentences.

A one-sentence response has no pairs, so no Div: `one_sentence="drop"` (default) drops it with
reason "one_sentence"; `"keep"` lets it through. Either way its `diversity` stat is None and it
is flagged "one_sentence" (as is a response with no sentence; the length filter normally
removes both first).
"""

from __future__ import annotations

from cift.filters.base import FilterContext
from cift.filters.sentences import split_sentences
from cift.scoring.embeddings import diversity_score, sentence_embeddings

_ONE_SENTENCE = ("drop", "keep")


class DiversityFilter:
    """Stats `diversity`; drops Div < `min` ("low_diversity") and, if asked, one-sentence
    responses ("one_sentence"). `model`: "minilm" or a sentence-transformers folder."""

    def __init__(
        self,
        min: float = 0.15,  # shadows the builtin: the config key is filter.diversity.min
        one_sentence: str = "drop",
        model: str = "minilm",
        batch_size: int = 256,
        dtype: str = "auto",
        name: str = "diversity",
        batch_tokens: int = 1024,
    ) -> None:
        if one_sentence not in _ONE_SENTENCE:
            raise ValueError(f"one_sentence must be one of {_ONE_SENTENCE}, got {one_sentence!r}")
        self.min = float(min)
        self.one_sentence = one_sentence
        self.model = model
        self.batch_size, self.batch_tokens = int(batch_size), int(batch_tokens)
        self.dtype = dtype
        self.name = name

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        if not samples:  # nothing reached this step: do not load the model
            return {}
        sentences = [split_sentences(s["output"]) for s in samples]
        embeddings = sentence_embeddings(
            sentences,
            model=self.model,
            batch_size=self.batch_size,
            dtype=self.dtype,
            batch_tokens=self.batch_tokens,
        )
        dropped: dict[str, str] = {}
        for sample, emb in zip(samples, embeddings, strict=True):
            row = stats[sample["id"]]
            div = diversity_score(emb)
            row["diversity"] = div
            if div is None:
                row["flags"].append("one_sentence")
                if self.one_sentence == "drop":
                    dropped[sample["id"]] = "one_sentence"
            elif div < self.min:
                dropped[sample["id"]] = "low_diversity"
        return dropped

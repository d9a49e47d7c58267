"""A local transformers model as teacher: chat templating and TeacherRequest/TeacherReply over
the shared `cift.models.generator.Generator` (batched, length-sorted, left-padded)."""

from __future__ import annotations

from dataclasses import replace

from cift.models import LoadedModel, ModelSpec
from cift.models.chat import TeacherReply, TeacherRequest, chat_prompt
from cift.models.generator import Generator
from cift.models.sampling import Sampling


class LocalTeacher:
    """The base model, or a version of it (`adapter`: a LoRA merged in or a mixture of experts,
    loaded by `cift.models.version.load_version`), answering chat requests."""

    rewrites_text = True  # a language model: it can rewrite instructions (cift.generate.evolve)

    def __init__(
        self,
        model: ModelSpec,
        name: str = "local",
        batch_size: int = 16,
        device: str = "cpu",
        repetition_penalty: float = 1.0,
        adapter: str | None = None,
        stop_after_line: str | None = None,
    ) -> None:
        self.spec = model
        self.adapter = adapter
        self.stop_after_line = stop_after_line  # e.g. "Advice:": end once that line is complete
        self.name = name
        self.batch_size = batch_size
        self.device = device
        self.repetition_penalty = repetition_penalty  # small models loop without it
        self._loaded: LoadedModel | None = None
        self._generator: Generator | None = None

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            from cift.models.version import load_version

            self._loaded = load_version(self.spec, self.adapter, device=self.device)
        return self._loaded

    @property
    def generator(self) -> Generator:
        if self._generator is None:
            lm = self.loaded
            self._generator = Generator(
                lm.model, lm.tokenizer, batch_size=self.batch_size, name=self.name
            )
        return self._generator

    @property
    def seconds(self) -> float:
        """Wall time spent decoding, for tokens/s."""
        return self._generator.seconds if self._generator is not None else 0.0

    def prompt_text(self, request: TeacherRequest) -> str:
        """Chat-templated prompt; a trailing assistant message is continued, not closed."""
        return chat_prompt(self.loaded.tokenizer, request.messages)

    def generate(
        self,
        requests: list[TeacherRequest],
        sampling: Sampling,
    ) -> list[TeacherReply]:
        # the teacher's own stop line and repetition penalty fill what the caller left unset
        sampling = replace(
            sampling,
            stop_after_line=sampling.stop_after_line or self.stop_after_line,
            repetition_penalty=(
                sampling.repetition_penalty
                if sampling.repetition_penalty != 1.0
                else self.repetition_penalty
            ),
        )
        tok = self.loaded.tokenizer
        ids = [tok(self.prompt_text(r), add_special_tokens=False)["input_ids"] for r in requests]
        outs = self.generator.generate(ids, sampling)
        return [
            TeacherReply(r.key, o.text, o.prompt_tokens, o.completion_tokens)
            for r, o in zip(requests, outs, strict=True)
        ]

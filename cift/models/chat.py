"""The chat interface of teachers, judges and evaluation: requests in, replies out (a model,
an endpoint or the KB behind it; `Sampling` says how to decode)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from cift.models.sampling import Sampling


@dataclass
class TeacherRequest:
    key: str  # sample/attempt id
    messages: list[dict]  # chat messages [{"role": "system"|"user"|"assistant", "content": str}]
    record: dict | None = None  # the structured record (template teachers use it)
    gold: str | None = None  # gold diagnosis (None when blind)


def chat_prompt(tokenizer, messages: list[dict]) -> str:
    """Chat-templated prompt text of `messages`; a trailing assistant message is the reply's
    prefill, continued rather than closed (the staged teacher and the forced-choice judge)."""
    prefill = ""
    if messages and messages[-1]["role"] == "assistant":
        messages, prefill = messages[:-1], messages[-1]["content"]
    return (
        tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        + prefill
    )


@dataclass
class TeacherReply:
    key: str
    text: str
    prompt_tokens: int
    completion_tokens: int
    error: str | None = None  # set when the request failed after all retries (text == "")
    # per generated token {"token", "logprob", "top": {token: logprob}} when the endpoint was
    # asked for log-probabilities and returned them (a judge reads its verdict's from them)
    logprobs: list[dict] | None = None


class Teacher(Protocol):
    name: str
    rewrites_text: bool  # a language model (can rewrite instructions), not a template in code

    def generate(
        self,
        requests: list[TeacherRequest],
        sampling: Sampling,
    ) -> list[TeacherReply]:
        """One reply per request, in order, decoded as `sampling` says (token budget,
        temperature, top_p, seed, stop strings). A last message with role "assistant" is a
        prefill that the reply continues (the reply's text excludes it)."""
        ...

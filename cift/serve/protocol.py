"""The OpenAI wire format: errors (each an HTTP status), requests, results, and the mapping
between OpenAI JSON bodies and the engine's `GenRequest` / `GenResult`. No models, no threads."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass
from typing import Any

from cift.models.sampling import Sampling

__all__ = ["Sampling"]  # re-exported: a request's sampling is the models' one type

RETRY_AFTER_S = 1
ROLES = ("system", "user", "assistant")

# ---------------------------------------------------------------------------------------------
# errors (each maps to an HTTP status with an OpenAI-style error body)


class ServeError(Exception):
    status = 500
    kind = "server_error"

    def __init__(self, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}


class BadRequest(ServeError):
    status = 400
    kind = "invalid_request_error"


class QueueFull(ServeError):
    status = 503
    kind = "overloaded"

    def __init__(self, message: str = "request queue is full; retry later") -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)})


class NotReady(ServeError):
    status = 503
    kind = "unavailable"

    def __init__(self, message: str = "no model version is loaded") -> None:
        super().__init__(message, {"Retry-After": str(RETRY_AFTER_S)})


# ---------------------------------------------------------------------------------------------
# requests and results


@dataclass
class GenRequest:
    """A chat (`messages`) or a raw completion (`prompt`) to generate for."""

    sampling: Sampling
    messages: list[dict] | None = None
    prompt: str | None = None


@dataclass
class GenResult:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str  # stop | length
    version: str


# ---------------------------------------------------------------------------------------------
# the OpenAI request/response mapping


def with_system_prompt(messages: list[dict], system_prompt: str | None) -> list[dict]:
    """The served model's training prompt: the configured system message unless the client sent
    its own (never a tokenizer's default)."""
    if system_prompt and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": system_prompt}, *messages]
    return messages


def _text_content(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # [{"type": "text", "text": ...}, ...]
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text":
                raise BadRequest("only text content parts are supported")
            parts.append(str(part.get("text", "")))
        return "".join(parts)
    raise BadRequest("message content must be a string or a list of text parts")


def check_messages(messages: Any) -> list[dict]:
    if not isinstance(messages, list) or not messages:
        raise BadRequest("messages: a non-empty list is required")
    out = []
    for m in messages:
        if not isinstance(m, dict) or m.get("role") not in ROLES:
            raise BadRequest(f"messages: each needs a role in {ROLES}")
        out.append({"role": m["role"], "content": _text_content(m.get("content"))})
    return out


def parse_sampling(body: dict, default_max_tokens: int, max_tokens_limit: int) -> Sampling:
    def number(key: str, default: float, lo: float, hi: float) -> float:
        value = body.get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int | float) or not lo <= value <= hi:
            raise BadRequest(f"{key}: expected a number in [{lo}, {hi}]")
        return float(value)

    if body.get("stream"):
        raise BadRequest("stream=true is not supported by this server")
    if body.get("n", 1) != 1:
        raise BadRequest("n: only 1 is supported")
    max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
    if max_tokens is None:
        max_tokens = default_max_tokens
    if isinstance(max_tokens, bool) or not isinstance(max_tokens, int) or max_tokens < 1:
        raise BadRequest("max_tokens: expected a positive integer")
    if max_tokens > max_tokens_limit:
        raise BadRequest(f"max_tokens: at most {max_tokens_limit} on this server")
    stop = body.get("stop") or ()
    if isinstance(stop, str):
        stop = (stop,)
    if not isinstance(stop, list | tuple) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("stop: expected a string or a list of non-empty strings")
    if len(stop) > 4:
        raise BadRequest("stop: at most 4 sequences")
    seed = body.get("seed")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int)):
        raise BadRequest("seed: expected an integer")
    return Sampling(
        max_new_tokens=max_tokens,
        temperature=number("temperature", 1.0, 0.0, 2.0),
        top_p=number("top_p", 1.0, 1e-6, 1.0),
        stop=tuple(stop),
        seed=seed,
    )


def chat_request(body: dict, system_prompt: str | None, max_tokens_limit: int) -> GenRequest:
    messages = with_system_prompt(check_messages(body.get("messages")), system_prompt)
    sampling = parse_sampling(body, min(max_tokens_limit, 512), max_tokens_limit)
    return GenRequest(sampling, messages=messages)


def completion_request(body: dict, max_tokens_limit: int) -> GenRequest:
    prompt = body.get("prompt")
    if isinstance(prompt, list) and len(prompt) == 1 and isinstance(prompt[0], str):
        prompt = prompt[0]
    if not isinstance(prompt, str) or not prompt:
        raise BadRequest("prompt: a non-empty string is required (one prompt per request)")
    return GenRequest(parse_sampling(body, 16, max_tokens_limit), prompt=prompt)


def _usage(r: GenResult) -> dict:
    return {
        "prompt_tokens": r.prompt_tokens,
        "completion_tokens": r.completion_tokens,
        "total_tokens": r.prompt_tokens + r.completion_tokens,
    }


def chat_response(r: GenResult) -> dict:
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": r.version,
        "system_fingerprint": r.version,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": r.text},
                "finish_reason": r.finish_reason,
                "logprobs": None,
            }
        ],
        "usage": _usage(r),
    }


def completion_response(r: GenResult) -> dict:
    return {
        "id": f"cmpl-{uuid.uuid4().hex}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": r.version,
        "system_fingerprint": r.version,
        "choices": [
            {"index": 0, "text": r.text, "finish_reason": r.finish_reason, "logprobs": None}
        ],
        "usage": _usage(r),
    }

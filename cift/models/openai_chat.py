"""Teacher backed by any OpenAI-compatible chat endpoint (vLLM, TGI, llama.cpp server, OpenAI).

The client's own retries are switched off (`max_retries=0`) so that retry behaviour is ours,
explicit and testable: transient failures (timeouts, connection errors, HTTP 5xx, 429, 408) are
retried with exponential backoff and jitter; when they persist the endpoint is declared down and
the whole batch fails with `TeacherUnavailable` (no partial output). Other 4xx errors are the
request's own fault: they come back as `TeacherReply(error=...)` and the batch goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait

import openai

from cift.models.chat import TeacherReply, TeacherRequest
from cift.models.sampling import Sampling
from cift.progress import progress

log = logging.getLogger(__name__)

# HTTP statuses worth retrying: request timeout, rate limit; 5xx are added in `_is_transient`.
_RETRY_STATUSES = frozenset({408, 429})
_MAX_BACKOFF_S = 30.0


class TeacherUnavailable(RuntimeError):
    """The endpoint kept failing with transient errors after all retries: the batch is void."""


def request_seed(seed: int, key: str) -> int:
    """Per-request seed derived from (run seed, request key), independent of batch position.

    Why: the same sample gets the same sampling noise whatever else is in its batch, and two
    requests in one batch do not share a seed.
    """
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(digest[:4], "big") & 0x7FFFFFFF


def _is_transient(exc: Exception) -> bool:
    if isinstance(exc, openai.APIConnectionError):  # includes APITimeoutError
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in _RETRY_STATUSES
    return False


def _describe(exc: Exception) -> str:
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}: {exc.message}"
    return f"{type(exc).__name__}: {exc}"


class OpenAITeacher:
    """Chat-completions teacher with a pool of `concurrency` worker threads.

    Replies come back in request order. Worst-case time per request is about
    `(max_retries + 1) * timeout_s + backoff_s * (2**max_retries - 1)` seconds.
    With `top_logprobs` set, every request asks for per-token log-probabilities and that many
    alternatives (a judge reads its verdict's probabilities from them); a reply carries them in
    `TeacherReply.logprobs` when the endpoint sent them.
    """

    rewrites_text = True

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key_env: str = "OPENAI_API_KEY",
        concurrency: int = 8,
        timeout_s: float = 60,
        max_retries: int = 4,
        backoff_s: float = 1.0,
        name: str = "openai",
        top_logprobs: int | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be >= 1, got {concurrency}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        if timeout_s <= 0:
            raise ValueError(f"timeout_s must be > 0, got {timeout_s}")
        if top_logprobs is not None and not 0 <= top_logprobs <= 20:
            raise ValueError(f"top_logprobs must be in [0, 20] (the API's), got {top_logprobs}")
        self.base_url = base_url
        self.model = model
        self.name = name
        self.concurrency = concurrency
        self.timeout_s = float(timeout_s)
        self.max_retries = max_retries
        self.backoff_s = float(backoff_s)
        self.top_logprobs = top_logprobs  # None: no log-probabilities asked for
        # vLLM and most local servers accept any key; "EMPTY" is their convention.
        api_key = os.environ.get(api_key_env) or "EMPTY"
        self._client = openai.OpenAI(
            base_url=base_url, api_key=api_key, timeout=self.timeout_s, max_retries=0
        )
        self._jitter = random.Random()

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._client.close()

    def generate(
        self,
        requests: list[TeacherRequest],
        sampling: Sampling,
    ) -> list[TeacherReply]:
        """Answer every request; raise `TeacherUnavailable` if the endpoint is down."""
        if not requests:
            return []
        params: dict = {
            "max_tokens": sampling.max_new_tokens,
            "temperature": max(sampling.temperature, 0.0),
            "top_p": sampling.top_p,
        }
        if sampling.stop:
            params["stop"] = list(sampling.stop)
        seed = sampling.seed or 0
        if self.top_logprobs is not None:
            params |= {"logprobs": True, "top_logprobs": self.top_logprobs}
        abort = threading.Event()
        bar = progress(desc=self.name, total=len(requests), unit="request")
        with bar, ThreadPoolExecutor(max_workers=min(self.concurrency, len(requests))) as pool:
            futures = [pool.submit(self._one, r, params, seed, abort) for r in requests]
            for f in futures:
                f.add_done_callback(lambda _: bar.update())
            done, _ = wait(futures, return_when=FIRST_EXCEPTION)
            failed = [f for f in futures if f in done and f.exception() is not None]
            if failed:
                abort.set()  # wake sleeping retries in the other workers and stop them
                for f in futures:
                    f.cancel()
                raise failed[0].exception()  # type: ignore[misc]
            return [f.result() for f in futures]

    def _one(
        self, req: TeacherRequest, params: dict, seed: int, abort: threading.Event
    ) -> TeacherReply:
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            if abort.is_set():
                raise TeacherUnavailable(f"teacher endpoint {self.base_url}: batch aborted")
            try:
                resp = self._client.chat.completions.create(
                    model=self.model,
                    messages=req.messages,
                    **_prefill_args(req.messages),
                    seed=request_seed(seed, req.key),
                    **params,
                )
            except openai.APIError as exc:
                if not _is_transient(exc):
                    return TeacherReply(req.key, "", 0, 0, error=_describe(exc))
                last = exc
                if attempt < self.max_retries:
                    delay = self._backoff(attempt)
                    log.warning(
                        "teacher %s request %s failed (%s); retry %d/%d in %.2fs",
                        self.base_url,
                        req.key,
                        _describe(exc),
                        attempt + 1,
                        self.max_retries,
                        delay,
                    )
                    abort.wait(delay)
                continue
            return _to_reply(req.key, resp)
        assert last is not None
        raise TeacherUnavailable(
            f"teacher endpoint {self.base_url} unavailable: request {req.key!r} failed "
            f"{self.max_retries + 1} times; last error: {_describe(last)}"
        ) from last

    def _backoff(self, attempt: int) -> float:
        """Exponential backoff with jitter in [50%, 100%] of the nominal delay (seconds)."""
        nominal = min(self.backoff_s * 2**attempt, _MAX_BACKOFF_S)
        return nominal * (0.5 + 0.5 * self._jitter.random())


def _to_reply(key: str, resp: object) -> TeacherReply:
    usage = getattr(resp, "usage", None)
    prompt_tokens = int(getattr(usage, "prompt_tokens", 0) or 0)
    completion_tokens = int(getattr(usage, "completion_tokens", 0) or 0)
    choices = getattr(resp, "choices", None) or []
    if not choices:
        return TeacherReply(
            key, "", prompt_tokens, completion_tokens, error="response had no choices"
        )
    text = choices[0].message.content or ""
    return TeacherReply(
        key, text, prompt_tokens, completion_tokens, logprobs=_token_logprobs(choices[0])
    )


def _token_logprobs(choice: object) -> list[dict] | None:
    """The choice's per-token log-probabilities, or None when the endpoint sent none."""
    content = getattr(getattr(choice, "logprobs", None), "content", None)
    if not content:
        return None
    return [
        {
            "token": t.token,
            "logprob": float(t.logprob),
            "top": {a.token: float(a.logprob) for a in (t.top_logprobs or [])},
        }
        for t in content
    ]


def _prefill_args(messages: list[dict]) -> dict:
    """A trailing assistant message is a prefill: vLLM continues it instead of opening a turn."""
    if messages and messages[-1]["role"] == "assistant":
        return {"extra_body": {"continue_final_message": True, "add_generation_prompt": False}}
    return {}

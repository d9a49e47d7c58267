"""OpenAITeacher against a real HTTP server (FastAPI + uvicorn, 127.0.0.1) failing on cue."""

from __future__ import annotations

import asyncio
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cift.models.chat import TeacherRequest
from cift.models.openai_chat import OpenAITeacher, TeacherUnavailable, request_seed
from cift.models.sampling import Sampling
from tests.conftest import running_app

GEN = Sampling(max_new_tokens=32, temperature=0.7, top_p=0.9, seed=7)


@dataclass
class Behaviour:
    """What the fake endpoint does; reset before every test."""

    fail_first: int = 0  # answer the first N calls with `fail_status`
    fail_status: int = 500
    always_status: int | None = None  # answer every call with this status
    delay_s: float = 0.0  # sleep before answering
    bad_request_word: str | None = None  # 400 when the user message contains this word
    calls: int = 0
    inflight: int = 0
    max_inflight: int = 0
    seen: list[dict] = field(default_factory=list)


def _completion(body: dict) -> dict:
    user = body["messages"][-1]["content"]
    text = f"echo: {user}"
    prompt_tokens = sum(len(m["content"].split()) for m in body["messages"])
    return {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": int(time.time()),
        "model": body["model"],
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(text.split()),
            "total_tokens": prompt_tokens + len(text.split()),
        },
    }


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "test", "code": status}}, status)


def _app(state: dict[str, Behaviour]) -> FastAPI:
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat(request: Request):  # type: ignore[no-untyped-def]
        b = state["b"]
        body = await request.json()
        b.calls += 1
        call_no = b.calls
        b.seen.append({**body, "authorization": request.headers.get("authorization")})
        b.inflight += 1
        b.max_inflight = max(b.max_inflight, b.inflight)
        try:
            if b.delay_s:
                await asyncio.sleep(b.delay_s)
            if b.always_status is not None:
                return _error(b.always_status, "always failing")
            if call_no <= b.fail_first:
                return _error(b.fail_status, f"failure {call_no}")
            if b.bad_request_word and b.bad_request_word in body["messages"][-1]["content"]:
                return _error(400, "prompt rejected")
            return _completion(body)
        finally:
            b.inflight -= 1

    return app


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, dict[str, Behaviour]]]:
    state = {"b": Behaviour()}
    with running_app(_app(state)) as url:
        yield f"{url}/v1", state


@pytest.fixture
def endpoint(server, monkeypatch) -> tuple[str, Behaviour]:
    base_url, state = server
    state["b"] = Behaviour()
    monkeypatch.delenv("CIFT_TEST_KEY", raising=False)
    return base_url, state["b"]


def _requests(n: int, word: str = "question") -> list[TeacherRequest]:
    return [
        TeacherRequest(
            key=f"{word}-{i}",
            messages=[
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": f"{word} {i}"},
            ],
        )
        for i in range(n)
    ]


def _teacher(base_url: str, **kw) -> OpenAITeacher:
    kw = {"timeout_s": 5, "max_retries": 3, "backoff_s": 0.01, "api_key_env": "CIFT_TEST_KEY"} | kw
    return OpenAITeacher(base_url, "test-model", **kw)


def test_batch_in_order_with_usage(endpoint):
    base_url, b = endpoint
    replies = _teacher(base_url).generate(_requests(10), GEN)
    assert [r.key for r in replies] == [f"question-{i}" for i in range(10)]
    assert [r.text for r in replies] == [f"echo: question {i}" for i in range(10)]
    assert all(r.error is None for r in replies)
    assert all(r.prompt_tokens == 5 and r.completion_tokens == 3 for r in replies)
    assert b.calls == 10
    sent = {s["messages"][-1]["content"]: s for s in b.seen}
    first = sent["question 0"]
    assert first["model"] == "test-model"
    assert first["max_tokens"] == 32 and first["temperature"] == 0.7 and first["top_p"] == 0.9
    assert first["seed"] == request_seed(7, "question-0")
    assert first["authorization"] == "Bearer EMPTY"  # key env var unset -> vLLM convention


def test_api_key_from_env_and_seed_per_key(endpoint, monkeypatch):
    base_url, b = endpoint
    monkeypatch.setenv("CIFT_TEST_KEY", "sk-test")
    _teacher(base_url).generate(_requests(2), GEN)
    assert {s["authorization"] for s in b.seen} == {"Bearer sk-test"}
    assert len({s["seed"] for s in b.seen}) == 2  # requests in a batch do not share a seed
    assert request_seed(7, "k1") == request_seed(7, "k1") != request_seed(8, "k1")


def test_requests_run_concurrently(endpoint):
    base_url, b = endpoint
    b.delay_s = 0.2
    start = time.monotonic()
    replies = _teacher(base_url, concurrency=4).generate(_requests(8), GEN)
    elapsed = time.monotonic() - start
    assert all(r.error is None for r in replies)
    assert b.max_inflight > 1
    assert b.max_inflight <= 4
    assert elapsed < 8 * 0.2  # faster than serial


@pytest.mark.parametrize("status", [500, 429])
def test_transient_failures_are_retried(endpoint, status):
    base_url, b = endpoint
    b.fail_first, b.fail_status = 2, status
    replies = _teacher(base_url, concurrency=1).generate(_requests(1), GEN)
    assert replies[0].error is None and replies[0].text == "echo: question 0"
    assert b.calls == 3


def test_always_failing_endpoint_raises_in_bounded_time(endpoint):
    base_url, b = endpoint
    b.always_status = 500
    start = time.monotonic()
    with pytest.raises(TeacherUnavailable) as info:
        _teacher(base_url, max_retries=2, concurrency=2).generate(_requests(4), GEN)
    assert time.monotonic() - start < 3
    message = str(info.value)
    assert base_url in message and "HTTP 500" in message and "3 times" in message
    assert b.calls <= 4 * 3  # never more than (max_retries + 1) per request


def test_slow_endpoint_times_out_then_raises(endpoint):
    base_url, b = endpoint
    b.delay_s = 1.5
    start = time.monotonic()
    with pytest.raises(TeacherUnavailable) as info:
        _teacher(base_url, timeout_s=0.3, max_retries=1).generate(_requests(1), GEN)
    assert time.monotonic() - start < 1.5
    assert base_url in str(info.value) and "Timeout" in str(info.value)
    assert b.calls == 2  # first try + one retry


def test_unreachable_endpoint_raises():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(TeacherUnavailable, match=f"{port}.*Connection"):
        _teacher(base_url, max_retries=1).generate(_requests(2), GEN)


def test_bad_request_is_a_per_request_error(endpoint):
    base_url, b = endpoint
    b.bad_request_word = "poison"
    reqs = _requests(2) + _requests(1, word="poison")
    replies = _teacher(base_url).generate(reqs, GEN)
    assert [r.error for r in replies[:2]] == [None, None]
    bad = replies[2]
    assert bad.text == "" and bad.error is not None
    assert "400" in bad.error and "prompt rejected" in bad.error
    assert b.calls == 3  # a 400 is not retried


def test_empty_batch_makes_no_calls(endpoint):
    base_url, b = endpoint
    assert _teacher(base_url).generate([], GEN) == []
    assert b.calls == 0

"""evaluate.backend=openai against a fake vLLM (FastAPI + uvicorn on 127.0.0.1): adapters loaded
by name at runtime, answers cut after the Advice line, cached like local answers."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from omegaconf import OmegaConf

from cift.evaluate.answers import AnswerCache, Version, answer_sampling, generate_answers
from cift.evaluate.remote import RemoteVersions, adapter_model_name
from tests.conftest import running_app

ANSWER = "Step 1: cough.\nDiagnosis: Asthma\nAdvice: see a doctor.\nTrailing text the cut drops."


def _app(seen: dict) -> FastAPI:
    app = FastAPI()

    @app.get("/v1/models")
    async def models():  # type: ignore[no-untyped-def]
        data = [{"id": "base-llm", "parent": None}]
        data += [{"id": name, "parent": "base-llm"} for name in seen["loaded"]]
        return {"object": "list", "data": data}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request):  # type: ignore[no-untyped-def]
        body = await request.json()
        if body["lora_name"] in seen["loaded"]:
            return JSONResponse({"message": "The lora adapter is already loaded."}, 400)
        seen["loaded"][body["lora_name"]] = body["lora_path"]
        return "Success"

    @app.post("/v1/chat/completions")
    async def chat(request: Request):  # type: ignore[no-untyped-def]
        body = await request.json()
        seen["chat"].append(body)
        if body["model"] not in ("base-llm", *seen["loaded"]):
            return JSONResponse({"error": {"message": "model not found", "code": 404}}, 404)
        return {
            "id": "x",
            "object": "chat.completion",
            "created": 0,
            "model": body["model"],
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": ANSWER},
                    "finish_reason": "length",
                }
            ],
            "usage": {"prompt_tokens": 5, "completion_tokens": 20, "total_tokens": 25},
        }

    return app


@pytest.fixture
def vllm() -> Iterator[tuple[str, dict]]:
    seen: dict = {"loaded": {}, "chat": []}
    with running_app(_app(seen)) as url:
        yield f"{url}/v1", seen


SAMPLES = [{"id": f"s{i}", "instruction": "Diagnose.", "input": f"case {i}"} for i in range(3)]


def test_versions_are_loaded_by_name_and_answers_cut_and_cached(vllm, tmp_path: Path):
    url, seen = vllm
    remote = RemoteVersions(url, timeout_s=5, max_retries=0)
    cache = AnswerCache(tmp_path / "cache")
    sampling = answer_sampling(64)
    adapter = tmp_path / "adapter"
    adapter.mkdir()
    candidate = Version("main/b1", str(adapter), "lora-0123456789abcdef")
    base = Version("base", None, "base-0123")
    for version in (candidate, base):
        answers, stats = generate_answers(
            remote.make_generator, version, SAMPLES, "Be careful.", sampling, cache
        )
        assert stats["generated"] == 3 and stats["tokens"] == 60
        assert set(answers.values()) == {"Step 1: cough.\nDiagnosis: Asthma\nAdvice: see a doctor."}
    name = adapter_model_name(candidate)
    assert seen["loaded"] == {name: str(adapter.resolve())}
    assert [c["model"] for c in seen["chat"]] == [name] * 3 + ["base-llm"] * 3
    assert all(c["max_tokens"] == 64 and c["temperature"] == 0.0 for c in seen["chat"])
    # a second evaluation of the same versions is served from the cache: no request at all
    _, stats = generate_answers(
        remote.make_generator, candidate, SAMPLES, "Be careful.", sampling, cache
    )
    assert stats["cached"] == 3 and len(seen["chat"]) == 6
    # a fresh process finds the adapter already loaded: that counts as loaded
    fresh = RemoteVersions(url, timeout_s=5, max_retries=0)
    assert fresh.model_name(candidate) == name


def test_a_failed_request_fails_the_evaluation_instead_of_caching_an_empty_answer(vllm, tmp_path):
    url, _ = vllm
    remote = RemoteVersions(url, model="not-served", timeout_s=5, max_retries=0)
    with pytest.raises(RuntimeError, match="requests failed"):
        generate_answers(
            remote.make_generator,
            Version("base", None, "base-0123"),
            SAMPLES,
            "Be careful.",
            answer_sampling(16),
            AnswerCache(tmp_path / "cache"),
        )
    assert AnswerCache(tmp_path / "cache").load(Version("base", None, "base-0123")) == {}


def test_the_evaluator_takes_the_backend_from_the_config(tmp_path: Path):
    from cift.config import load_params
    from cift.evaluate.build import build_evaluator

    cfg = load_params()
    cfg = OmegaConf.merge(
        cfg, {"evaluate": {"backend": "openai", "cache_dir": str(tmp_path / "cache")}}
    )
    ev = build_evaluator(cfg)
    assert isinstance(ev.make_generator.__self__, RemoteVersions)
    assert ev.make_generator.__self__.base_url == "http://127.0.0.1:8001/v1"
    cfg.evaluate.backend = "grpc"
    with pytest.raises(ValueError, match=r"evaluate\.backend"):
        build_evaluator(cfg)

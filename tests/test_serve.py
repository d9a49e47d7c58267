"""cift serve on the tiny random model: a real registry, a real uvicorn server on a free port.

Hot swap under load with no failed request, a slow request held across a swap (finishes on the
old version, which is then freed), a failed load (old version kept, error on /health), bearer
token, queue overflow (503 + Retry-After), rollback followed within 2 s, /v1/models, and the
vLLM backend's request sequence against a fake vLLM.
"""

from __future__ import annotations

import asyncio
import copy
import gc
import threading
import time
import weakref
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch
from fastapi import FastAPI, Request  # module level: FastAPI resolves the annotations here
from fastapi.responses import JSONResponse, PlainTextResponse

from cift.bench.serve import Server, seed_adapters
from cift.models.loading import ModelSpec
from cift.models.version import merge_lora_into
from cift.registry import Registry
from cift.serve.app import create_app
from cift.serve.engine import LocalEngine, MergedLoader
from cift.serve.vllm import VLLMBackend
from cift.train.adapters import save_adapter
from cift.train.module import wrap_lora

pytestmark = pytest.mark.timeout(300)

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
CHAT = {"messages": [{"role": "user", "content": "Fever and cough for 3 days."}]}
NO_REVS = {"git_rev": None, "dvc_rev": None}


@pytest.fixture(scope="module")
def loader() -> MergedLoader:
    loader = MergedLoader(ModelSpec(name="tiny", source="tiny_random"), device="cpu")
    loader.base  # noqa: B018 - load once for the module
    return loader


@pytest.fixture(scope="module")
def adapters(loader, tmp_path_factory) -> dict[str, Path]:
    """Three seeded adapters on the tiny base, and one recorded against another base."""
    out = tmp_path_factory.mktemp("adapters")
    folders = seed_adapters(loader.base, LORA, out, 3, seed=7)
    torch.manual_seed(0)
    bad = wrap_lora(copy.deepcopy(loader.base.model), LORA)
    save_adapter(bad, out / "wrong_base", base_hash="0" * 64)
    return {"good": folders, "wrong_base": out / "wrong_base"}


@pytest.fixture
def registry(tmp_path, adapters) -> Registry:
    """v0001–v0003 (good), v0004 (trained on another base); production = v0001."""
    reg = Registry(tmp_path / "registry")
    for i, folder in enumerate(adapters["good"]):
        assert reg.register(folder, {"batch": f"b{i + 1}", **NO_REVS}) == f"v000{i + 1}"
    assert reg.register(adapters["wrong_base"], {"batch": "bad", **NO_REVS}) == "v0004"
    reg.promote("v0001")
    return reg


class Gate:
    """Wraps every loaded model's generate: while `hold` is set, the next call blocks until
    `release` (a request held open as long as the test wants)."""

    def __init__(self, loader: MergedLoader) -> None:
        self.loader = loader
        self.hold, self.started, self.release = (
            threading.Event(),
            threading.Event(),
            threading.Event(),
        )

    def __call__(self, info):
        model, tok = self.loader(info)
        if info.adapter_path is None:
            return model, tok
        original = model.generate

        def generate(*args, **kwargs):
            if self.hold.is_set():
                self.hold.clear()
                self.started.set()
                assert self.release.wait(30)
            return original(*args, **kwargs)

        model.generate = generate
        return model, tok


def _engine(registry, loader, **kw) -> LocalEngine:
    opts = {"max_batch_size": 4, "batch_wait_ms": 5, "watch_interval_s": 0.1, **kw}
    return LocalEngine(registry, loader, system_prompt="You are a physician.", **opts).start()


@pytest.fixture
def serve(registry, loader):
    """serve(**engine_options, token=None, gate=False) -> (engine, base_url, gate)."""
    started = []

    def start(token: str | None = None, gate: bool = False, **kw):
        g = Gate(loader) if gate else None
        engine = _engine(registry, g or loader, **kw)
        server = Server(create_app(engine, token, manage_backend=False)).__enter__()
        started.append((engine, server, g))
        return engine, server.url, g

    yield start
    for engine, server, g in started:
        if g is not None:
            g.release.set()
        server.__exit__(None, None, None)
        engine.stop()


def _chat(url: str, max_tokens: int = 6, timeout: float = 30, headers=None, **extra):
    body = {**CHAT, "max_tokens": max_tokens, "temperature": 0, **extra}
    return httpx.post(f"{url}/v1/chat/completions", json=body, timeout=timeout, headers=headers)


def _wait(predicate, timeout: float = 10.0, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(step)


# ---------------------------------------------------------------------------------------------


def test_openai_routes_name_the_version(serve):
    engine, url, _ = serve()
    r = _chat(url, max_tokens=6)
    assert r.status_code == 200, r.text
    body = r.json()
    assert r.headers["X-Cift-Version"] == body["system_fingerprint"] == "v0001"
    assert body["object"] == "chat.completion"
    usage = body["usage"]
    assert usage["prompt_tokens"] > 5 and 1 <= usage["completion_tokens"] <= 6
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    text = body["choices"][0]["message"]["content"]
    assert _chat(url, max_tokens=6).json()["choices"][0]["message"]["content"] == text  # greedy

    stop = text.strip().split()[0] if text.strip() else None
    if stop:  # a stop string ends the answer before it
        stopped = _chat(url, max_tokens=6, stop=[stop]).json()["choices"][0]
        assert stopped["message"]["content"] == text[: text.find(stop)]
        assert stopped["finish_reason"] == "stop"

    r = httpx.post(f"{url}/v1/completions", json={"prompt": "Fever", "max_tokens": 3})
    assert r.status_code == 200 and r.headers["X-Cift-Version"] == "v0001"
    assert r.json()["object"] == "text_completion" and r.json()["usage"]["completion_tokens"] <= 3

    models = httpx.get(f"{url}/v1/models").json()["data"]
    assert [m["id"] for m in models] == ["v0001"] and models[0]["batch"] == "b1"
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["version"] == "v0001"
    assert health["last_error"] is None

    for bad in ({"max_tokens": 0}, {"stream": True}, {"messages": []}, {"n": 2}):
        r = httpx.post(f"{url}/v1/chat/completions", json={**CHAT, **bad})
        assert r.status_code == 400, bad
    assert engine.batches >= 1


def test_batches_waiting_requests_together(serve):
    engine, url, gate = serve(gate=True, max_batch_size=8)
    gate.hold.set()
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(_chat, url)
        assert gate.started.wait(10)
        batches = engine.batches
        rest = [pool.submit(_chat, url, 3 + i) for i in range(6)]
        _wait(lambda: engine.health()["queue"] == 6)
        gate.release.set()
        responses = [f.result() for f in [first, *rest]]
    assert all(r.status_code == 200 for r in responses)
    assert engine.batches == batches + 2  # the held one, then the six waiting ones together
    assert [r.json()["usage"]["completion_tokens"] for r in responses[1:]] == [3, 4, 5, 6, 7, 8]


def test_swap_under_load_has_no_failed_request(serve, registry):
    engine, url, _ = serve()
    promoted, stop = {"v0001"}, threading.Event()
    results: list[tuple[int, str | None]] = []

    def client() -> None:
        with httpx.Client(base_url=url, timeout=30) as http:
            while not stop.is_set():
                r = http.post("/v1/chat/completions", json={**CHAT, "max_tokens": 4})
                results.append((r.status_code, r.headers.get("X-Cift-Version")))

    def served(k: int = 4) -> None:
        """The watcher's time to see a move, then k more answered requests (a loaded CPU
        answers fewer in a fixed time)."""
        target = len(results) + k
        time.sleep(0.4)
        _wait(lambda: len(results) >= target, timeout=60)

    threads = [threading.Thread(target=client) for _ in range(6)]
    for t in threads:
        t.start()
    for action in ["v0002", "v0003", "rollback", "v0001", "rollback", "v0003"]:
        served()
        if action == "rollback":
            promoted.add(registry.rollback())
        else:
            promoted.add(registry.promote(action))
    served(6)  # the last version is picked up and answers
    stop.set()
    for t in threads:
        t.join()
    assert len(results) > 20
    assert all(status == 200 for status, _ in results), [s for s, _ in results if s != 200]
    assert {v for _, v in results} <= promoted
    assert len({v for _, v in results}) >= 3
    assert engine.swaps >= 4 and engine.version == "v0003"
    _wait(lambda: list(engine.pool()) == ["v0003"])


def test_slow_request_finishes_on_old_version_which_is_then_freed(serve, registry):
    engine, url, gate = serve(gate=True)
    old_model = weakref.ref(engine._pool["v0001"].model)
    gate.hold.set()
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_chat, url)
        assert gate.started.wait(10)
        registry.promote("v0002")
        r = httpx.post(f"{url}/admin/reload", timeout=30)
        assert r.status_code == 200 and r.json()["version"] == "v0002"
        loaded = httpx.get(f"{url}/health").json()["loaded"]
        assert loaded == {
            "v0001": {"in_flight": 1, "retired": True},
            "v0002": {"in_flight": 0, "retired": False},
        }
        new = pool.submit(_chat, url)  # accepted after the swap: the new version
        _wait(lambda: engine.health()["queue"] == 1)
        assert not slow.done()
        gate.release.set()
        assert slow.result().status_code == 200
        assert slow.result().headers["X-Cift-Version"] == "v0001"
        assert new.result().headers["X-Cift-Version"] == "v0002"
    _wait(lambda: list(engine.pool()) == ["v0002"])
    gc.collect()
    assert old_model() is None


def test_failed_load_keeps_serving_and_reports_on_health(serve, registry):
    engine, url, _ = serve()
    registry.promote("v0004")  # an adapter trained on another base model
    _wait(lambda: engine.last_error is not None)
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "degraded" and health["version"] == "v0001"
    assert "v0004" in health["last_error"] and "base model" in health["last_error"]
    r = _chat(url)
    assert r.status_code == 200 and r.headers["X-Cift-Version"] == "v0001"
    r = httpx.post(f"{url}/admin/reload", timeout=30)  # a forced retry fails the same way
    assert r.status_code == 500 and "v0004" in r.json()["error"]
    assert list(engine.pool()) == ["v0001"]

    registry.promote("v0002")
    _wait(lambda: engine.version == "v0002")
    health = httpx.get(f"{url}/health").json()
    assert health["status"] == "ok" and health["last_error"] is None
    assert _chat(url).headers["X-Cift-Version"] == "v0002"


def test_bearer_token(serve, monkeypatch):
    _, url, _ = serve(token="s3cret")
    good = {"Authorization": "Bearer s3cret"}
    for headers in (None, {"Authorization": "Bearer wrong"}, {"Authorization": "s3cret"}):
        r = _chat(url, headers=headers)
        assert r.status_code == 401 and r.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.get(f"{url}/v1/models", headers=headers).status_code == 401
        assert httpx.post(f"{url}/admin/reload", headers=headers).status_code == 401
    assert _chat(url, headers=good).status_code == 200
    assert httpx.get(f"{url}/v1/models", headers=good).status_code == 200
    assert httpx.post(f"{url}/admin/reload", headers=good, timeout=30).status_code == 200
    assert httpx.get(f"{url}/health").status_code == 200  # open, for load balancers


def test_queue_overflow_gives_503_with_retry_after(serve):
    engine, url, gate = serve(gate=True, queue_size=2, max_batch_size=1)
    gate.hold.set()
    with ThreadPoolExecutor(3) as pool:
        running = pool.submit(_chat, url)
        assert gate.started.wait(10)
        waiting = [pool.submit(_chat, url) for _ in range(2)]
        _wait(lambda: engine.health()["queue"] == 2)
        r = _chat(url)
        assert r.status_code == 503 and r.headers["Retry-After"] == "1"
        assert r.json()["error"]["type"] == "overloaded"
        gate.release.set()
        assert [f.result().status_code for f in [running, *waiting]] == [200, 200, 200]
    assert _chat(url).status_code == 200


def test_rollback_is_served_within_two_seconds(serve, registry):
    engine, url, _ = serve(watch_interval_s=0.5)  # the default polling interval
    registry.promote("v0002")
    _wait(lambda: engine.version == "v0002")
    assert _chat(url).headers["X-Cift-Version"] == "v0002"
    assert registry.rollback() == "v0001"
    time.sleep(2.0)
    r = _chat(url)
    assert r.status_code == 200 and r.headers["X-Cift-Version"] == "v0001"


def test_fast_merge_matches_peft(adapters):
    from peft import PeftModel

    loader = MergedLoader(ModelSpec(name="tiny", source="tiny_random"), dtype="float32")
    base = loader.base.model
    ours = copy.deepcopy(base)
    assert merge_lora_into(ours, adapters["good"][0])
    reference = PeftModel.from_pretrained(copy.deepcopy(base), str(adapters["good"][0]))
    reference = reference.merge_and_unload()
    theirs = dict(reference.named_parameters())
    changed = 0
    for name, param in ours.named_parameters():
        torch.testing.assert_close(param, theirs[name], rtol=1e-5, atol=1e-6)
        changed += not torch.equal(param, dict(base.named_parameters())[name])
    assert changed == 2 * len(LORA["target_modules"])  # every targeted layer of both blocks


# ---------------------------------------------------------------------------------------------
# vLLM backend against a fake vLLM


def fake_vllm(calls: list, slow: asyncio.Event, slow_started: asyncio.Event):
    app = FastAPI()
    loaded: dict[str, str] = {}

    @app.get("/v1/models")
    async def models():
        data = [{"id": "base-model", "object": "model", "parent": None}]
        data += [{"id": n, "object": "model", "parent": "base-model"} for n in loaded]
        return {"object": "list", "data": data}

    @app.post("/v1/load_lora_adapter")
    async def load(request: Request):
        body = await request.json()
        calls.append(("load", body["lora_name"], body["lora_path"]))
        if "v0003" in body["lora_path"]:
            return JSONResponse({"error": {"message": "bad adapter"}}, status_code=500)
        if body["lora_name"] in loaded:
            msg = f"The lora adapter '{body['lora_name']}' has already been loaded."
            return JSONResponse({"error": {"message": msg}}, status_code=400)
        loaded[body["lora_name"]] = body["lora_path"]
        return PlainTextResponse(f"Success: LoRA adapter '{body['lora_name']}' added.")

    @app.post("/v1/unload_lora_adapter")
    async def unload(request: Request):
        body = await request.json()
        calls.append(("unload", body["lora_name"]))
        if loaded.pop(body["lora_name"], None) is None:
            return JSONResponse({"error": {"message": "not found"}}, status_code=404)
        return PlainTextResponse("Success")

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.json()
        model = body["model"]
        if model != "base-model" and model not in loaded:
            return JSONResponse({"error": {"message": f"no model {model}"}}, status_code=404)
        prompt = body["messages"][-1]["content"]
        calls.append(("chat", model, body["messages"][0]["content"], prompt))
        if prompt == "SLOW":
            slow_started.set()
            await slow.wait()
        return {
            "id": "x",
            "object": "chat.completion",
            "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"}}],
            "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
        }

    return app


def test_vllm_backend_request_sequence(registry):
    async def scenario() -> list:
        calls: list = []
        slow, slow_started = asyncio.Event(), asyncio.Event()
        backend = VLLMBackend(
            registry,
            "http://vllm",
            transport=httpx.ASGITransport(app=fake_vllm(calls, slow, slow_started)),
            watch_interval_s=0,
            system_prompt="SYS",
        )
        await backend.astart()
        app = create_app(backend, manage_backend=False)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://cift") as http:

            async def chat(content: str) -> httpx.Response:
                body = {"messages": [{"role": "user", "content": content}], "max_tokens": 4}
                return await http.post("/v1/chat/completions", json=body)

            async def settle() -> None:
                for _ in range(20):
                    await asyncio.sleep(0.01)

            r = await chat("hi")
            assert r.status_code == 200 and r.headers["X-Cift-Version"] == "v0001"
            assert r.json()["system_fingerprint"] == "v0001"
            held = asyncio.create_task(chat("SLOW"))
            await slow_started.wait()
            registry.promote("v0002")
            assert (await http.post("/admin/reload")).json()["version"] == "v0002"
            r = await chat("after")
            assert r.headers["X-Cift-Version"] == "v0002"
            await settle()
            assert not any(c[0] == "unload" for c in calls)  # v0001 still has a request
            slow.set()
            assert (await held).headers["X-Cift-Version"] == "v0001"
            await settle()
            calls.append("--- rollback")
            registry.rollback()
            await http.post("/admin/reload")
            await settle()
            assert (await chat("back")).headers["X-Cift-Version"] == "v0001"
            await settle()
            calls.append("--- base")
            registry.promote("v0000")
            await http.post("/admin/reload")
            await settle()
            assert (await chat("base")).headers["X-Cift-Version"] == "v0000"
            await settle()
            calls.append("--- failed load")
            registry.promote("v0003")
            r = await http.post("/admin/reload")
            assert r.status_code == 500 and "v0003" in r.json()["error"]
            health = (await http.get("/health")).json()
            assert health["status"] == "degraded" and health["version"] == "v0000"
            assert (await chat("still")).headers["X-Cift-Version"] == "v0000"
            assert [m["id"] for m in (await http.get("/v1/models")).json()["data"]] == ["v0000"]
        await backend.astop()
        return calls

    calls = asyncio.run(scenario())
    path = {v: str(registry.version_dir(v)) for v in ("v0001", "v0002", "v0003")}
    assert calls == [
        ("load", "cift-v0001", path["v0001"]),
        ("chat", "cift-v0001", "SYS", "hi"),
        ("chat", "cift-v0001", "SYS", "SLOW"),
        ("load", "cift-v0002", path["v0002"]),
        ("chat", "cift-v0002", "SYS", "after"),
        ("unload", "cift-v0001"),  # only once the slow request was done
        "--- rollback",
        ("load", "cift-v0001", path["v0001"]),  # the same fixed name again
        ("unload", "cift-v0002"),  # nothing in flight on it: at once
        ("chat", "cift-v0001", "SYS", "back"),
        "--- base",
        ("unload", "cift-v0001"),
        ("chat", "base-model", "SYS", "base"),
        "--- failed load",
        ("load", "cift-v0003", path["v0003"]),
        ("chat", "base-model", "SYS", "still"),
    ]


# ---------------------------------------------------------------------------------------------


def test_cli_wiring():
    from cift.bench.serve import build_parser as bench_parser
    from cift.cli import BENCHES, build_parser
    from cift.serve.cli import cmd_serve

    args = build_parser().parse_args(["serve", "--port", "8123", "-S", "model=tiny_random"])
    assert args.func is cmd_serve and args.port == 8123 and args.overrides == ["model=tiny_random"]
    assert BENCHES["serve"] == "cift.bench.serve"
    defaults = bench_parser().parse_args([])
    assert (defaults.duration, defaults.clients, defaults.max_tokens) == (60, 20, 32)
    assert defaults.timeout == 30 and defaults.registry is None


def test_bench_serve_short_run(capsys, monkeypatch):
    """The bench end to end on the tiny model (too short for its target: exit 1)."""
    import json

    from cift.bench import serve as bench

    code = bench.main(
        ["--duration", "4", "--clients", "3", "--swaps", "3", "-S", "model=tiny_random"]
    )
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(result) == {
        "requests",
        "failures",
        "swaps",
        "duration_s",
        "p50_ms",
        "p95_ms",
        "per_version",
        "target_met",
    }
    assert result["failures"] == 0 and result["swaps"] == 3 and result["requests"] > 0
    assert sum(result["per_version"].values()) == result["requests"]
    assert result["target_met"] is False and code == 1

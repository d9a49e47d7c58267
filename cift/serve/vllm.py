"""`serve.backend=vllm`: drive a running vLLM server with dynamic LoRA loading.

vLLM holds the base model once and any number of LoRA adapters beside it (started with
`--enable-lora --max-loras N --max-lora-rank R` and `VLLM_ALLOW_RUNTIME_LORA_UPDATING=True`).
Each registry version is one adapter with a fixed name, `cift-<id>` (`cift-v0003`): ids are never
reused, so a name always means the same weights. On a move of the alias:

1. `POST /v1/load_lora_adapter`
   `{"lora_name": "cift-v0004", "lora_path": "<registry>/versions/v0004"}` (an "already
   loaded" answer counts as loaded: e.g. after a restart of `cift serve`);
2. new requests are proxied to vLLM's `/v1/chat/completions` / `/v1/completions` with
   `model` set to `cift-v0004` (one assignment: the switch is atomic);
3. once the last request proxied to the previous adapter has returned,
   `POST /v1/unload_lora_adapter {"lora_name": "cift-v0003"}`.

`v0000` (the base) is vLLM's own model (the first entry of its `/v1/models` without a parent,
or `serve.vllm_model`) and is never unloaded. A failed load keeps the old route and is reported on
`/health`. The adapter path must be readable by the vLLM process (same machine or a shared
filesystem). `serve.queue_size` bounds the requests in flight to vLLM (503 + Retry-After beyond).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from dataclasses import dataclass
from typing import Any

import httpx

from cift.serve.engine import AliasFollower, state_fingerprint
from cift.serve.protocol import (
    BadRequest,
    NotReady,
    QueueFull,
    ServeError,
    check_messages,
    with_system_prompt,
)

log = logging.getLogger("cift.serve")
PREFIX = "cift-"


class UpstreamError(ServeError):
    kind = "upstream_error"

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class Route:
    """Where requests for one version go: the vLLM model name, and the requests in flight."""

    version: str
    name: str
    adapter: bool  # False for the base model (never unloaded)
    refs: int = 0  # 1 while current + 1 per request in flight
    retired: bool = False


def adapter_name(version: str, prefix: str = PREFIX) -> str:
    return f"{prefix}{version}"


class VLLMBackend(AliasFollower):
    """The serving backend for `cift serve` with `serve.backend=vllm` (see the module docstring)."""

    backend = "vllm"

    def __init__(
        self,
        registry: Any,
        base_url: str,
        *,
        alias: str = "production",
        queue_size: int = 64,
        watch_interval_s: float = 0.5,
        api_key: str | None = None,
        system_prompt: str | None = None,
        base_model: str | None = None,
        timeout_s: float = 300.0,
        transport: httpx.AsyncBaseTransport | None = None,
        prefix: str = PREFIX,
    ) -> None:
        self.registry, self.alias = registry, alias
        self.base_url = base_url.rstrip("/")
        self.queue_size, self.watch_interval_s = queue_size, watch_interval_s
        self.api_key, self.system_prompt = api_key, system_prompt
        self.base_model, self.timeout_s = base_model, timeout_s
        self.transport, self.prefix = transport, prefix
        self._client: httpx.AsyncClient | None = None
        self._routes: dict[str, Route] = {}
        self._current: Route | None = None
        self._sync_lock: asyncio.Lock | None = None
        self._watcher: asyncio.Task | None = None
        self._tasks: set[asyncio.Task] = set()
        self._fingerprint: tuple | None = None
        self._failed: tuple | None = None
        self._inflight = 0
        self.last_error: str | None = None
        self.swaps = 0
        self.started_at = time.time()

    # -- life cycle ---------------------------------------------------------------------------

    async def astart(self) -> None:
        if self._client is not None:
            return
        headers = {"Authorization": f"Bearer {self.api_key}"} if self.api_key else {}
        self._client = httpx.AsyncClient(
            base_url=self.base_url,
            transport=self.transport,
            timeout=httpx.Timeout(self.timeout_s, connect=10.0),
            headers=headers,
        )
        self._sync_lock = asyncio.Lock()
        result = await self.sync(force=True)
        if self._current is None:
            await self.astop()
            raise RuntimeError(f"cannot serve {self.alias!r} through vLLM: {result.get('error')}")
        if self.watch_interval_s > 0:
            self._watcher = asyncio.create_task(self._watch())

    async def astop(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.watch_interval_s)
            if state_fingerprint(self.registry.state_path) != self._fingerprint:
                try:
                    await self.sync(force=False)
                except Exception:
                    log.exception("reload failed")

    # -- versions -----------------------------------------------------------------------------

    @property
    def version(self) -> str | None:
        return self._current.version if self._current else None

    async def _base_model_name(self) -> str:
        if self.base_model:
            return self.base_model
        resp = await self._client.get("/v1/models")
        resp.raise_for_status()
        models = resp.json().get("data", [])
        names = [m["id"] for m in models if not m.get("parent")]
        names = [n for n in names if not n.startswith(self.prefix)] or names
        if not names:
            raise RuntimeError(f"{self.base_url}/v1/models lists no base model")
        self.base_model = names[0]
        return self.base_model

    async def _admin(self, path: str, payload: dict) -> httpx.Response:
        return await self._client.post(path, json=payload)

    async def _load(self, name: str, path: str) -> None:
        resp = await self._admin("/v1/load_lora_adapter", {"lora_name": name, "lora_path": path})
        if resp.status_code == 200:
            return
        text = resp.text
        if resp.status_code == 400 and "already" in text.lower():
            return  # loaded before (e.g. by an earlier run of cift serve): same name, same weights
        raise RuntimeError(f"vLLM refused to load {name} ({resp.status_code}): {text[:300]}")

    async def _unload(self, route: Route) -> None:
        async with self._sync_lock:
            if route.refs > 0 or not route.retired or self._routes.get(route.name) is not route:
                return  # taken back into service meanwhile
            del self._routes[route.name]
            try:
                resp = await self._admin("/v1/unload_lora_adapter", {"lora_name": route.name})
                if resp.status_code != 200:
                    log.warning("vLLM: unload %s: %s %s", route.name, resp.status_code, resp.text)
                else:
                    log.info("vLLM: unloaded %s", route.name)
            except httpx.HTTPError as exc:
                log.warning("vLLM: unload %s failed: %s", route.name, exc)

    async def sync(self, force: bool = True) -> dict:
        """Bring vLLM's route in line with the alias (see the module docstring)."""
        async with self._sync_lock:
            fingerprint, info, settled = self._target(force)
            if settled is not None:
                return settled
            t0 = time.perf_counter()
            try:
                if info.adapter_path is None:
                    name = await self._base_model_name()
                else:
                    name = adapter_name(info.version, self.prefix)
                route = self._routes.get(name)
                if route is None:
                    if info.adapter_path is not None:
                        await self._load(name, str(info.adapter_path))
                    route = Route(info.version, name, adapter=info.adapter_path is not None)
                    self._routes[name] = route
            except Exception as exc:
                return self._failed_load(fingerprint, info.version, f"{type(exc).__name__}: {exc}")
            old = self._current
            route.retired = False
            route.refs += 1
            self._current = route  # the switch: new requests go to this adapter
            self.swaps += old is not None
            self._fingerprint, self._failed, self.last_error = fingerprint, None, None
            previous = old.version if old else None
            log.info("vLLM: serving %s as %s (was %s)", info.version, name, previous)
            if old is not None:
                old.retired = True
                self._release(old)
            return {
                "version": info.version,
                "previous": previous,
                "changed": True,
                "error": None,
                "load_s": round(time.perf_counter() - t0, 3),
            }

    def _release(self, route: Route) -> None:
        route.refs -= 1
        if route.refs <= 0 and route.retired and route.adapter:
            task = asyncio.get_running_loop().create_task(self._unload(route))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    # -- requests -----------------------------------------------------------------------------

    async def _proxy(self, path: str, body: dict) -> tuple[dict, str]:
        if body.get("stream"):
            raise BadRequest("stream=true is not supported by this server")
        route = self._current
        if route is None or self._client is None:
            raise NotReady()
        if self._inflight >= self.queue_size:
            raise QueueFull(f"{self._inflight} requests in flight (serve.queue_size); retry later")
        body = {**body, "model": route.name}
        if "messages" in body:
            messages = check_messages(body["messages"])
            body["messages"] = with_system_prompt(messages, self.system_prompt)
        route.refs += 1
        self._inflight += 1
        try:
            resp = await self._client.post(path, json=body)
        except httpx.TimeoutException as exc:
            raise UpstreamError(504, f"vLLM did not answer in time ({exc})") from exc
        except httpx.HTTPError as exc:
            raise UpstreamError(502, f"vLLM unreachable: {exc}") from exc
        finally:
            self._inflight -= 1
            self._release(route)
        if resp.status_code != 200:
            try:
                message = resp.json().get("error", {}).get("message") or resp.text
            except ValueError:
                message = resp.text
            raise UpstreamError(resp.status_code, f"vLLM: {str(message)[:500]}")
        payload = resp.json()
        payload["model"] = route.version
        payload["system_fingerprint"] = route.version
        return payload, route.version

    async def chat_completions(self, body: dict) -> tuple[dict, str]:
        return await self._proxy("/v1/chat/completions", body)

    async def completions(self, body: dict) -> tuple[dict, str]:
        return await self._proxy("/v1/completions", body)

    async def areload(self) -> dict:
        return await self.sync(force=True)

    def health(self) -> dict:
        current, error = self._current, self.last_error
        status = "unavailable" if current is None else ("degraded" if error else "ok")
        return {
            "status": status,
            "version": current.version if current else None,
            "alias": self.alias,
            "last_error": error,
            "backend": self.backend,
            "vllm_url": self.base_url,
            "vllm_model": current.name if current else None,
            "loaded": {
                r.version: {
                    "vllm_model": r.name,
                    "in_flight": r.refs - (0 if r.retired else 1),
                    "retired": r.retired,
                }
                for r in self._routes.values()
            },
            "queue": self._inflight,
            "queue_size": self.queue_size,
            "swaps": self.swaps,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def models(self) -> list[dict]:
        current = self._current
        if current is None:
            return []
        return [
            {
                "id": current.version,
                "object": "model",
                "created": int(self.started_at),
                "owned_by": "cift",
                "alias": self.alias,
                "vllm_model": current.name,
            }
        ]

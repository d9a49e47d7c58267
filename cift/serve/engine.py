"""The local serving engine: a pool of loaded versions, hot swap, and batched generation.

* A version is the frozen base with one registry adapter merged in (`MergedLoader`: the base is
  loaded once and kept pristine; each version is a copy of it with its adapter merged, so a
  version generates at the base's speed).
* Hot swap: `reload()` resolves the served alias; when it names another version, that version is
  loaded *beside* the current one, then one assignment under the lock routes every new request to
  it. Each request holds a reference on the version it was admitted to, so requests already
  accepted finish on the old version; the old version's model is dropped when its last request
  is done. A failed load leaves the current version serving and is reported on `/health`. A
  watcher thread calls `reload()` whenever the registry's state file changes (inode, mtime or
  size), polling every `watch_interval_s`.
* Batching: one worker thread takes the first waiting request, collects more for up to
  `batch_wait_ms` (up to `max_batch_size`), and generates them together through the shared
  `cift.models.generator.Generator`, one batch per (version, sampling parameters) group; each
  row stops at its own `max_tokens` or `stop` string. Admission is bounded: more than
  `queue_size` waiting requests raise `QueueFull` (HTTP 503 with Retry-After).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import copy
import gc
import logging
import os
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cift.models.generator import Generator
from cift.models.loading import resolve_device
from cift.serve.protocol import (
    BadRequest,
    GenRequest,
    GenResult,
    NotReady,
    QueueFull,
    chat_request,
    chat_response,
    completion_request,
    completion_response,
)

log = logging.getLogger("cift.serve")


@dataclass
class Version:
    """One loaded version in the pool. `refs` = 1 while it is the current version + 1 per request
    admitted to it and not yet finished; at 0 (retired and drained) its model is dropped."""

    version: str
    model: Any
    tokenizer: Any
    info: Any = None
    refs: int = 0
    retired: bool = False
    loaded_at: float = field(default_factory=time.time)
    served: int = 0


@dataclass
class _Job:
    request: GenRequest
    handle: Version | None
    future: concurrent.futures.Future
    accepted: float


# ---------------------------------------------------------------------------------------------
# loading versions


class MergedLoader:
    """`loader(version_info) -> (model, tokenizer)`: the base (loaded once, kept pristine and
    shared by `v0000`) or a deep copy of it with the version's adapter applied by
    `cift.models.version.apply_adapter` (base hash checked, safetensors only, a LoRA merged in,
    a mixture of experts routed)."""

    def __init__(self, spec: Any, device: str = "auto", dtype: str | None = None) -> None:
        self.spec, self.device, self.dtype = spec, resolve_device(device), dtype
        self._base: Any = None
        self._lock = threading.Lock()

    @property
    def base(self) -> Any:
        with self._lock:
            if self._base is None:
                self._base = self.spec.load(self.device, dtype=self.dtype)
                self._base.model.requires_grad_(False)
            return self._base

    def __call__(self, info: Any) -> tuple[Any, Any]:
        from cift.models.adapter_format import check_base_hash
        from cift.models.version import apply_adapter

        base = self.base
        if info.adapter_path is None:
            return base.model, base.tokenizer
        check_base_hash(info.adapter_path, base.base_hash)  # before paying for the copy
        model = apply_adapter(copy.deepcopy(base.model), info.adapter_path, base.base_hash)
        return model.eval(), base.tokenizer


# ---------------------------------------------------------------------------------------------
# generation


def prompt_ids(tok: Any, request: GenRequest) -> list[int]:
    if request.messages is not None:
        try:
            text = tok.apply_chat_template(
                request.messages, tokenize=False, add_generation_prompt=True
            )
        except Exception as exc:  # a template that refuses the conversation (role order…)
            raise BadRequest(f"messages: the chat template refused them ({exc})") from exc
        return tok(text, add_special_tokens=False)["input_ids"]
    return tok(request.prompt)["input_ids"]


def generate_batch(model: Any, tok: Any, jobs: list[tuple[list[int], GenRequest]]) -> list:
    """One `model.generate` over requests with the same sampling key, in admission order (each
    row with its own max_tokens and stop strings): the shared `Generator` with the whole group
    as one batch. [(text, completion_tokens, finish_reason)] in order."""
    generator = Generator(model, tok, batch_size=max(len(jobs), 1), name="serve")
    outs = generator.generate(
        [ids for ids, _ in jobs], [r.sampling for _, r in jobs], sort=False, show=False
    )
    return [(o.text, o.completion_tokens, o.finish_reason) for o in outs]


# ---------------------------------------------------------------------------------------------
# the engine


def state_fingerprint(path: Any) -> tuple | None:
    """Changes on every registry write (each write replaces the file: a new inode)."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)


class AliasFollower:
    """What both backends share to follow a registry alias: deciding whether the alias names a
    new version to load, and keeping the failure state (`last_error`, a failed load not retried
    by the watcher for the same registry state). Subclasses set `registry`, `alias`, `_current`
    (with `.version`), `_fingerprint`, `_failed` and `last_error`."""

    def _target(self, force: bool) -> tuple[tuple | None, Any, dict | None]:
        """(registry fingerprint, what the alias resolves to, the result when there is nothing
        to load: the alias is unresolvable, already served, or a known failure not forced)."""
        fingerprint = state_fingerprint(self.registry.state_path)
        current = self._current
        try:
            info = self.registry.resolve(self.alias)
        except Exception as exc:
            error = f"resolve {self.alias!r}: {exc}"
            return fingerprint, None, self._failed_load(fingerprint, None, error)
        if current is not None and info.version == current.version:
            self._fingerprint, self._failed, self.last_error = fingerprint, None, None
            return fingerprint, info, {"version": current.version, "changed": False, "error": None}
        if not force and self._failed == (fingerprint, info.version):
            settled = {"version": self.version, "changed": False, "error": self.last_error}
            return fingerprint, info, settled
        return fingerprint, info, None

    def _failed_load(self, fingerprint: tuple | None, version: str | None, error: str) -> dict:
        message = f"loading {version}: {error}" if version else error
        log.error("%s; still serving %s", message, self.version)
        self.last_error = message
        self._fingerprint, self._failed = fingerprint, (fingerprint, version)
        return {"version": self.version, "changed": False, "error": message}


class LocalEngine(AliasFollower):
    """Serves the registry alias `alias` from local models (see the module docstring)."""

    backend = "local"

    def __init__(
        self,
        registry: Any,
        loader: Callable[[Any], tuple[Any, Any]],
        *,
        alias: str = "production",
        max_batch_size: int = 8,
        batch_wait_ms: float = 10.0,
        queue_size: int = 64,
        watch_interval_s: float = 0.5,
        max_tokens_limit: int = 1024,
        system_prompt: str | None = None,
    ) -> None:
        if max_batch_size < 1 or queue_size < 1:
            raise ValueError("max_batch_size and queue_size must be ≥ 1")
        self.registry, self.loader, self.alias = registry, loader, alias
        self.max_batch_size, self.batch_wait_s = max_batch_size, batch_wait_ms / 1000
        self.queue_size, self.watch_interval_s = queue_size, watch_interval_s
        self.max_tokens_limit, self.system_prompt = max_tokens_limit, system_prompt
        self._lock = threading.Lock()  # current, pool, refs, waiting
        self._sync_lock = threading.Lock()  # one reload at a time
        self._queue: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._waiting = 0
        self._current: Version | None = None
        self._pool: dict[str, Version] = {}
        self._fingerprint: tuple | None = None
        self._failed: tuple | None = None  # (fingerprint, version) of the last failed load
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.last_error: str | None = None
        self.swaps = 0
        self.batches = 0
        self.started_at = time.time()

    # -- life cycle ---------------------------------------------------------------------------

    def start(self) -> LocalEngine:
        """Load the alias's version (raises when that fails), start the worker and watcher."""
        if self._threads:
            return self
        result = self.reload()
        if self._current is None:
            raise RuntimeError(f"cannot serve {self.alias!r}: {result.get('error')}")
        self._stop.clear()
        threads = [threading.Thread(target=self._work, name="cift-serve-worker", daemon=True)]
        if self.watch_interval_s > 0:
            threads.append(
                threading.Thread(target=self._watch, name="cift-serve-watcher", daemon=True)
            )
        for t in threads:
            t.start()
        self._threads = threads
        return self

    def stop(self) -> None:
        self._stop.set()
        self._queue.put(None)
        for t in self._threads:
            t.join(timeout=30)
        self._threads = []
        while True:  # fail whatever was still queued
            try:
                job = self._queue.get_nowait()
            except queue.Empty:
                break
            if job is not None:
                self._finish(job, error=NotReady("server is shutting down"))

    async def astart(self) -> None:
        await asyncio.to_thread(self.start)

    async def astop(self) -> None:
        await asyncio.to_thread(self.stop)

    # -- versions -----------------------------------------------------------------------------

    @property
    def version(self) -> str | None:
        current = self._current
        return current.version if current else None

    def pool(self) -> dict[str, dict]:
        """Loaded versions: {version: {"in_flight", "retired"}} (a retired one is draining)."""
        with self._lock:
            return {
                v.version: {"in_flight": v.refs - (0 if v.retired else 1), "retired": v.retired}
                for v in self._pool.values()
            }

    def reload(self, force: bool = True) -> dict:
        """Bring the served version in line with the alias. `force=False` (the watcher) does not
        retry a load that failed for the same registry state."""
        with self._sync_lock:
            fingerprint, info, settled = self._target(force)
            if settled is not None:
                return settled
            t0 = time.perf_counter()
            with self._lock:
                handle = self._pool.get(info.version)  # still draining: take it back at once
                old = self._switch(handle, fingerprint) if handle is not None else None
            if handle is None:
                try:
                    model, tokenizer = self.loader(info)
                    tokenizer.padding_side = "left"
                except Exception as exc:
                    return self._failed_load(
                        fingerprint, info.version, f"{type(exc).__name__}: {exc}"
                    )
                handle = Version(info.version, model, tokenizer, info)
                del model
                with self._lock:
                    old = self._switch(handle, fingerprint)
            seconds = time.perf_counter() - t0
            previous = old.version if old else None
            log.info("serving %s (was %s; ready in %.2f s)", handle.version, previous, seconds)
            if old is not None:
                self._retire(old)
            return {
                "version": handle.version,
                "previous": previous,
                "changed": True,
                "error": None,
                "load_s": round(seconds, 3),
            }

    def _switch(self, handle: Version, fingerprint: tuple | None) -> Version | None:
        """Make `handle` current (the lock is held): the one step that routes new requests."""
        old = self._current
        handle.retired = False
        handle.refs += 1  # the "current" reference
        self._pool[handle.version] = handle
        self._current = handle
        self.swaps += old is not None
        self._fingerprint, self._failed, self.last_error = fingerprint, None, None
        return old

    def _retire(self, handle: Version) -> None:
        with self._lock:
            handle.retired = True
        self._release(handle)

    def _release(self, handle: Version) -> None:
        with self._lock:
            handle.refs -= 1
            drained = handle.refs <= 0 and handle.retired
            if drained and self._pool.get(handle.version) is handle:
                del self._pool[handle.version]
            if drained:
                handle.model = handle.tokenizer = None
        if drained:
            log.info("freed %s", handle.version)
            gc.collect()  # PEFT leaves reference cycles: free the weights now, not later
            _empty_device_cache()

    def _watch(self) -> None:
        while not self._stop.wait(self.watch_interval_s):
            if state_fingerprint(self.registry.state_path) != self._fingerprint:
                try:
                    self.reload(force=False)
                except Exception:  # never let the watcher die
                    log.exception("reload failed")

    # -- requests -----------------------------------------------------------------------------

    def submit(self, request: GenRequest) -> concurrent.futures.Future:
        """Admit a request to the current version (QueueFull beyond `queue_size` waiting)."""
        future: concurrent.futures.Future = concurrent.futures.Future()
        with self._lock:
            handle = self._current
            if handle is None or self._stop.is_set():
                raise NotReady()
            if self._waiting >= self.queue_size:
                raise QueueFull(f"{self._waiting} requests waiting (serve.queue_size); retry later")
            handle.refs += 1
            self._waiting += 1
        self._queue.put(_Job(request, handle, future, time.monotonic()))
        return future

    async def generate(self, request: GenRequest) -> GenResult:
        return await asyncio.wrap_future(self.submit(request))

    async def chat_completions(self, body: dict) -> tuple[dict, str]:
        result = await self.generate(chat_request(body, self.system_prompt, self.max_tokens_limit))
        return chat_response(result), result.version

    async def completions(self, body: dict) -> tuple[dict, str]:
        result = await self.generate(completion_request(body, self.max_tokens_limit))
        return completion_response(result), result.version

    async def areload(self) -> dict:
        return await asyncio.to_thread(self.reload, True)

    def health(self) -> dict:
        current, error = self._current, self.last_error
        status = "unavailable" if current is None else ("degraded" if error else "ok")
        return {
            "status": status,
            "version": current.version if current else None,
            "alias": self.alias,
            "last_error": error,
            "backend": self.backend,
            "loaded": self.pool(),
            "queue": self._waiting,
            "queue_size": self.queue_size,
            "swaps": self.swaps,
            "uptime_s": round(time.time() - self.started_at, 1),
        }

    def models(self) -> list[dict]:
        current = self._current
        if current is None:
            return []
        meta = (current.info.meta if current.info is not None else None) or {}
        return [
            {
                "id": current.version,
                "object": "model",
                "created": int(current.loaded_at),
                "owned_by": "cift",
                "alias": self.alias,
                "parent": meta.get("parent"),
                "batch": meta.get("batch"),
            }
        ]

    # -- the worker ---------------------------------------------------------------------------

    def _work(self) -> None:
        while not self._stop.is_set():
            job = self._queue.get()
            if job is None:
                break
            batch = [job]
            deadline = time.monotonic() + self.batch_wait_s
            while len(batch) < self.max_batch_size:
                try:
                    left = deadline - time.monotonic()
                    nxt = self._queue.get(timeout=left) if left > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self._queue.put(None)  # stop after this batch
                    break
                batch.append(nxt)
            with self._lock:
                self._waiting -= len(batch)
            live = []
            for j in batch:
                if j.future.set_running_or_notify_cancel():
                    live.append(j)
                else:  # the client went away before its turn
                    self._finish(j)
            try:
                self._run(live)
            except Exception as exc:  # never let the worker die with requests in its hands
                log.exception("batch failed")
                for j in live:
                    if j.handle is not None:
                        self._finish(j, error=exc)
            del batch, live, job

    def _run(self, jobs: list[_Job]) -> None:
        groups: dict[tuple, list[tuple[list[int], _Job]]] = {}
        for job in jobs:
            handle = job.handle
            try:
                ids = prompt_ids(handle.tokenizer, job.request)
                ids = self._fit(handle, ids, job.request)
            except Exception as exc:
                self._finish(job, error=exc)
                continue
            key = (id(handle), job.request.sampling.group_key())
            groups.setdefault(key, []).append((ids, job))
        for group in groups.values():
            handle = group[0][1].handle
            try:
                outputs = generate_batch(
                    handle.model, handle.tokenizer, [(ids, job.request) for ids, job in group]
                )
                self.batches += 1
            except Exception as exc:
                log.exception("generation failed on %s", handle.version)
                for _, job in group:
                    self._finish(job, error=exc)
                continue
            for (ids, job), (text, n, finish) in zip(group, outputs, strict=True):
                self._finish(job, GenResult(text, len(ids), n, finish, handle.version))
            del handle

    def _fit(self, handle: Version, ids: list[int], request: GenRequest) -> list[int]:
        limit = getattr(handle.model.config, "max_position_embeddings", None)
        if limit and len(ids) + request.sampling.max_new_tokens > limit:
            raise BadRequest(
                f"prompt ({len(ids)} tokens) + max_tokens ({request.sampling.max_new_tokens}) "
                f"exceed the model's context of {limit} tokens"
            )
        return ids

    def _finish(self, job: _Job, result: GenResult | None = None, error: Exception | None = None):
        handle, job.handle = job.handle, None
        future = job.future
        if not future.cancelled():
            try:
                if error is not None:
                    future.set_exception(error)
                elif result is not None:
                    future.set_result(result)
                    handle.served += 1
            except concurrent.futures.InvalidStateError:
                pass
        if handle is not None:
            self._release(handle)


def _empty_device_cache() -> None:
    try:
        import torch

        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    except Exception:
        pass

"""The OpenAI-compatible HTTP app over a serving backend (local engine or vLLM).

Routes: `POST /v1/chat/completions`, `POST /v1/completions`, `GET /v1/models`, `GET /health`,
`POST /admin/reload`. With a token, every `/v1` and `/admin` route needs
`Authorization: Bearer <token>` (401 otherwise); `/health` stays open. Every generation response
names the version that produced it: header `X-Cift-Version` and `system_fingerprint`.

A backend provides: `backend` (its name), `async astart()`, `async astop()`,
`async chat_completions(body) -> (payload, version)`, `async completions(body)`, `async areload()
-> dict`, `health() -> dict`, `models() -> list[dict]`; errors are `ServeError`s.
"""

from __future__ import annotations

import hmac
import logging
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from cift.serve.protocol import BadRequest, ServeError

VERSION_HEADER = "X-Cift-Version"
PROTECTED = ("/v1", "/admin")
log = logging.getLogger("cift.serve")


def _error(status: int, message: str, kind: str, headers: dict | None = None) -> JSONResponse:
    body = {"error": {"message": message, "type": kind, "code": status}}
    return JSONResponse(body, status_code=status, headers=headers)


def create_app(backend: Any, token: str | None = None, *, manage_backend: bool = True) -> FastAPI:
    """The app serving `backend`. `manage_backend`: start/stop the backend with the app's
    lifespan (off when the caller runs it, as the tests and the bench do)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        if manage_backend:
            await backend.astart()
        try:
            yield
        finally:
            if manage_backend:
                await backend.astop()

    app = FastAPI(title="cift serve", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.backend = backend
    expected = f"Bearer {token}".encode() if token else None

    @app.middleware("http")
    async def bearer_token(request: Request, call_next):
        if expected is not None and request.url.path.startswith(PROTECTED):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(
                    401,
                    "missing or wrong bearer token",
                    "authentication_error",
                    {"WWW-Authenticate": "Bearer"},
                )
        return await call_next(request)

    async def _json_body(request: Request) -> dict:
        try:
            body = await request.json()
        except ValueError as exc:
            raise BadRequest(f"the body is not valid JSON ({exc})") from exc
        if not isinstance(body, dict):
            raise BadRequest("the body must be a JSON object")
        return body

    async def _generate(request: Request, method: str) -> JSONResponse:
        try:
            body = await _json_body(request)
            payload, version = await getattr(backend, method)(body)
        except ServeError as exc:
            return _error(exc.status, exc.message, exc.kind, exc.headers)
        except Exception as exc:  # a bug or a model failure: 500, the server keeps running
            log.exception("%s failed", method)
            return _error(500, f"{type(exc).__name__}: {exc}", "server_error")
        return JSONResponse(payload, headers={VERSION_HEADER: version})

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> JSONResponse:
        return await _generate(request, "chat_completions")

    @app.post("/v1/completions")
    async def completions(request: Request) -> JSONResponse:
        return await _generate(request, "completions")

    @app.get("/v1/models")
    async def models() -> JSONResponse:
        return JSONResponse({"object": "list", "data": backend.models()})

    @app.get("/health")
    async def health() -> JSONResponse:
        state = backend.health()
        return JSONResponse(state, status_code=200 if state.get("version") else 503)

    @app.post("/admin/reload")
    async def reload() -> JSONResponse:
        result = await backend.areload()
        return JSONResponse(result, status_code=200 if not result.get("error") else 500)

    return app

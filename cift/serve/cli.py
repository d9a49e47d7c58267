"""`cift serve`: the OpenAI-compatible server for a registry alias (default `production`)."""

from __future__ import annotations

import argparse
import ipaddress
import logging
import os
import sys
from pathlib import Path
from typing import Any

from cift.cli_common import add_set_option


def registry_dir(cfg: Any, given: str | None) -> Path:
    """`--registry`, else `deploy.registry_dir` relative to the repo root (else the cwd)."""
    if given:
        return Path(given)
    folder = Path(cfg.deploy.registry_dir)
    if folder.is_absolute():
        return folder
    try:
        from cift.config import repo_root

        return repo_root() / folder
    except FileNotFoundError:
        return folder


def model_spec(cfg_model: Any) -> Any:
    from hydra.utils import instantiate

    return instantiate(cfg_model)


def build_backend(cfg: Any, registry: Any, *, backend: str, alias: str, vllm_url: str) -> Any:
    """The serving backend from the `serve:` config (local engine or vLLM)."""
    s = cfg.serve
    if backend == "vllm":
        from cift.serve.vllm import VLLMBackend

        return VLLMBackend(
            registry,
            vllm_url,
            alias=alias,
            queue_size=int(s.queue_size),
            watch_interval_s=float(s.watch_interval_s),
            api_key=os.environ.get(str(s.vllm_api_key_env)) or None,
            system_prompt=cfg.system_prompt,
            base_model=s.get("vllm_model") or None,
        )
    if backend != "local":
        raise SystemExit(f"serve.backend: {backend!r} is not local or vllm")
    from cift.serve.engine import LocalEngine, MergedLoader

    return LocalEngine(
        registry,
        MergedLoader(model_spec(cfg.model), device=str(s.device)),
        alias=alias,
        max_batch_size=int(s.max_batch_size),
        batch_wait_ms=float(s.batch_wait_ms),
        queue_size=int(s.queue_size),
        watch_interval_s=float(s.watch_interval_s),
        max_tokens_limit=int(s.max_tokens_limit),
        system_prompt=cfg.system_prompt,
    )


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from cift.config import compose_config
    from cift.registry import Registry
    from cift.serve.app import create_app

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    cfg = compose_config(args.overrides)
    s = cfg.serve
    backend_name = args.backend or str(s.backend)
    host, port = args.host or str(s.host), int(args.port or s.port)
    alias = args.alias or str(s.get("alias", "production"))
    token = os.environ.get(str(s.token_env)) or None
    if not token and not _loopback(host):
        print(
            f"warning: serving on {host} without a token (set {s.token_env} to require one)",
            file=sys.stderr,
        )
    registry = Registry(registry_dir(cfg, args.registry))
    backend = build_backend(
        cfg, registry, backend=backend_name, alias=alias, vllm_url=args.vllm_url or s.vllm_url
    )
    local = backend_name == "local"
    if local:  # load before binding: a broken production fails here, with its error
        try:
            backend.start()
        except RuntimeError as exc:
            print(exc, file=sys.stderr)
            return 1
    app = create_app(backend, token, manage_backend=not local)
    print(
        f"serving {registry.root} alias {alias!r} ({backend_name}) on http://{host}:{port}/v1"
        + (f"; token required ({s.token_env})" if token else ""),
        file=sys.stderr,
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level="info")
    finally:
        if local:
            backend.stop()
    return 0


def add_parser(sub: Any) -> argparse.ArgumentParser:
    p = sub.add_parser(
        "serve", help="OpenAI-compatible server for the registry's production alias (hot swap)"
    )
    p.add_argument("--registry", help="registry folder (default: deploy.registry_dir)")
    p.add_argument("--alias", help="registry alias to serve (default: serve.alias, production)")
    p.add_argument("--host", help="bind address (default: serve.host, 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default: serve.port)")
    p.add_argument("--backend", choices=["local", "vllm"], help="default: serve.backend")
    p.add_argument("--vllm-url", help="running vLLM server (default: serve.vllm_url)")
    add_set_option(
        p, "Hydra override (repeatable), e.g. -S model=tiny_random -S serve.max_batch_size=4"
    )
    p.set_defaults(func=cmd_serve)
    return p

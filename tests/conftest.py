"""Shared fixtures: composed configs and a throwaway copy of the repo for DAG runs."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")
os.environ.setdefault("DVC_NO_ANALYTICS", "1")


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return ROOT


def compose(overrides: list[str] | None = None):
    """The resolved config for `overrides`, composed as lightning-hydra-template's tests do."""
    from cift.config import compose_config

    return compose_config(overrides, root=ROOT)


def copy_repo(dest: Path) -> Path:
    """The working tree's tracked and untracked-but-not-ignored files, committed in a new repo
    (a clone of the work in progress), so DAG runs never touch the real params.yaml or data."""
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard", "-z"],
        cwd=ROOT,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    git = ["git", "-c", "user.name=cift-tests", "-c", "user.email=tests@cift.invalid"]
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=dest, check=True)
    subprocess.run([*git, "add", "-A"], cwd=dest, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "snapshot"], cwd=dest, check=True)
    return dest


@pytest.fixture
def repo_copy(tmp_path: Path) -> Path:
    return copy_repo(tmp_path / "repo")


def run_env() -> dict:
    """Environment for subprocesses: the venv's tools first on PATH (dvc stages call `python`)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("DVC_ROOT", None)
    return env


def bag_embed(texts: list[str]):
    """A cheap stand-in for MiniLM in fast tests: hashed bag of words, L2-normalised rows."""
    import re

    import numpy as np

    out = np.zeros((len(texts), 512), dtype=np.float32)
    for i, text in enumerate(texts):
        for w in re.findall(r"\w+", text.lower()):
            out[i, sum(map(ord, w)) * 31 % 512] += 1
    return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


@contextlib.contextmanager
def running_app(app) -> Iterator[str]:
    """A FastAPI app served by uvicorn in a thread on a free 127.0.0.1 port: yields its URL
    (no /v1), stops it on exit. The fake endpoints of the OpenAI-compatible tests run here."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", 0))
    config = uvicorn.Config(app, log_level="warning", timeout_graceful_shutdown=1, lifespan="off")
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not srv.started:
        assert time.monotonic() < deadline, "test server did not start"
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        srv.should_exit = True
        thread.join(timeout=5)
        sock.close()

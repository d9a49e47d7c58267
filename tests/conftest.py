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


def one_thread_per_worker() -> None:
    """Under pytest-xdist with a worker per core, each worker and every process it starts (the
    DAG's stages) runs one OpenMP thread: at torch's default of a thread per core, two busy
    workers oversubscribe the CPU and every OpenMP barrier waits on a descheduled thread.
    Measured on 2 cores: a Table 1 arm beside a busy torch job took 56 s at 2 threads each and
    45 s at 1, while the job kept 43 vs 70 steps/s. The scoring engines still pick their count
    by measurement (`cift.scoring.threads`), so a worker left alone uses both cores there."""
    from cift.scoring.threads import available_cores

    workers = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
    if workers > 1 and workers >= available_cores() and "OMP_NUM_THREADS" not in os.environ:
        os.environ["OMP_NUM_THREADS"] = "1"  # read by torch when it is first imported


one_thread_per_worker()


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


AUDIT_HOOK = Path(__file__).parent / "audit"  # a sitecustomize.py that records reads and imports


@pytest.fixture(scope="session")
def tiny_dag_run(tmp_path_factory: pytest.TempPathFactory, worker_id: str) -> Path:
    """The whole tiny DAG (`dvc exp run -S profile=tiny`) in a copy of the repo, run once per
    session: the first xdist worker to ask runs it under a file lock and the other waits for it,
    so the modules that build on it can run on both workers. Read it, never write to it: a
    module that adds experiments, registries or batches takes its own copy (`tiny_dag`)."""
    from filelock import FileLock, Timeout

    shared = tmp_path_factory.getbasetemp()
    shared = shared if worker_id == "master" else shared.parent  # one folder per session
    root, failed = shared / "tiny_dag", shared / "tiny_dag.failed"
    repo, audit = root / "repo", root / "audit"  # audit: what each stage read and imported
    spare = shared / "tiny_dag.spare_core"  # a worker waits for the DAG: its core is free
    lock = FileLock(str(shared / "tiny_dag.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        spare.touch()  # stages started from now on run a thread per core (tests/audit)
        lock.acquire()
    try:
        if failed.exists():
            pytest.fail(f"the tiny DAG failed on another worker:\n{failed.read_text()}")
        if not (root / "done").exists():
            shutil.rmtree(root, ignore_errors=True)
            repo.mkdir(parents=True)
            audit.mkdir()
            copy_repo(repo)
            path = os.pathsep.join(filter(None, [str(AUDIT_HOOK), os.environ.get("PYTHONPATH")]))
            env = {"CIFT_AUDIT_DIR": str(audit), "PYTHONPATH": path, "CIFT_SPARE_CORE": str(spare)}
            started = time.perf_counter()
            try:  # 2 cores: >10 min
                run(["dvc", "exp", "run", "-S", "profile=tiny"], repo, timeout=1800, env=env)
            except Exception as error:  # the other worker reports it instead of running it again
                failed.write_text(str(error))
                raise
            print(f"dvc exp run -S profile=tiny: {time.perf_counter() - started:.0f} s")
            (root / "done").touch()
    finally:
        lock.release()
    return repo


@pytest.fixture(scope="module")
def tiny_dag(tiny_dag_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A module's own copy of the tiny DAG's repo (git, DVC cache and experiments included) and
    audit records: its tests read it in file order and may write to it."""
    dest = tmp_path_factory.mktemp("dag")
    shutil.copytree(tiny_dag_run.parent / "audit", dest / "audit")
    return Path(shutil.copytree(tiny_dag_run, dest / "repo", symlinks=True))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The first module on the tiny DAG goes first and every other one last: with `--dist
    loadfile` one worker starts building the DAG at once while the other runs the remaining
    files, then takes the late modules when the DAG is ready (instead of waiting on the lock
    with files still queued)."""
    dag = [i for i in items if "tiny_dag" in getattr(i, "fixturenames", ())]
    if not dag:
        return
    first = {id(i) for i in dag if i.path == dag[0].path}
    late = {id(i) for i in dag} - first
    items.sort(key=lambda i: 0 if id(i) in first else 2 if id(i) in late else 1)  # stable


def run_env() -> dict:
    """Environment for subprocesses: the venv's tools first on PATH (dvc stages call `python`)."""
    import sys

    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    env.pop("DVC_ROOT", None)
    return env


def run(
    args: list[str], cwd: Path, timeout: int = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    """`args` in `cwd` with `run_env()` (plus `env`); fails the test with its output tails."""
    proc = subprocess.run(
        args,
        cwd=cwd,
        env={**run_env(), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, (
        f"{' '.join(args)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return proc


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

"""The model registry: ids, idempotent register/publish, the rollback stack, crash safety,
concurrent writers, name validation, safetensors only, and the `cift registry` CLI."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from cift.cli import main as cift_main
from cift.registry import (
    BASE_ID,
    InvalidName,
    NotFound,
    Refused,
    Registry,
    VersionInfo,
)
from cift.registry.publish import batch_order

ROOT = Path(__file__).resolve().parents[1]
SUMMARY_KEYS = {"version", "aliases", "parent", "batch", "created", "metrics"}
HISTORY_KEYS = {"ts", "action", "alias", "from", "to", "reason", "command"}
BAD_NAMES = ["../x", "/etc", "v0001/../../x", "a/b", "", ".", "..", "production\n", "a\\b"]


def make_adapter(folder: Path, value: float = 0.0, *, weights: bool = True) -> Path:
    """A tiny adapter folder as cift writes it (config, safetensors weights, cift metadata)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(json.dumps({"r": 2, "peft_type": "LORA"}))
    (folder / "cift_adapter.json").write_text(json.dumps({"base_hash": "h", "metadata": {}}))
    if weights:
        save_file(
            {"w": np.full(2, value, dtype=np.float32)}, str(folder / "adapter_model.safetensors")
        )
    return folder


@pytest.fixture(autouse=True)
def no_fsync(monkeypatch: pytest.MonkeyPatch) -> None:
    """fsync only matters for power loss, which no test can simulate; here it costs ~5 ms a call
    (a dozen per registration). The subprocess tests (kill, concurrency) still fsync for real."""
    monkeypatch.setattr(os, "fsync", lambda fd: None)


@pytest.fixture
def reg(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A registry holding two versions, built once (registering fsyncs a lot) and copied."""
    tmp = tmp_path_factory.mktemp("template")
    reg = Registry(tmp / "registry")
    a = reg.register(make_adapter(tmp / "a", 1.0), {"batch": "b1"})
    assert reg.register(make_adapter(tmp / "b", 2.0), {"batch": "b2", "parent": a}) == "v0002"
    return reg.root


@pytest.fixture
def two(reg: Registry, template: Path) -> tuple[str, str]:
    shutil.copytree(template, reg.root)
    return "v0001", "v0002"


def cli(*args: str) -> int:
    """`cift …` in-process; its exit code."""
    try:
        cift_main(list(args))
    except SystemExit as exc:
        return int(exc.code or 0)
    return 0


def cli_json(capsys: pytest.CaptureFixture, *args: str) -> object:
    capsys.readouterr()
    assert cli(*args) == 0
    return json.loads(capsys.readouterr().out)


# -- ids, register, resolve ----------------------------------------------------------------------


def test_fresh_registry_has_the_base_on_production_and_proxy(reg: Registry):
    assert reg.aliases() == {"production": BASE_ID, "proxy": BASE_ID}
    assert reg.resolve("production") == VersionInfo(BASE_ID, None, reg.resolve("base").meta)
    assert [r["version"] for r in reg.list()] == [BASE_ID]
    assert not reg.root.exists()  # reading creates nothing


def test_ids_are_allocated_in_order_and_never_reused(reg: Registry, tmp_path: Path):
    a = reg.register(make_adapter(tmp_path / "a", 1.0), {"batch": "b1", "source": "main/b1"})
    b = reg.register(make_adapter(tmp_path / "b", 2.0), {"parent": "production", "version": "x"})
    assert (a, b) == ("v0001", "v0002")
    assert reg.register(tmp_path / "a") == a  # same weights: the same version, no new id
    (reg.versions_dir / "v0003").mkdir()  # an orphan left by a crash: never visible, replaced
    (reg.versions_dir / "v0003" / "junk").write_text("x")
    c = reg.register(make_adapter(tmp_path / "c", 3.0))
    assert c == "v0003" and not (reg.versions_dir / c / "junk").exists()
    state = json.loads(reg.state_path.read_text())
    assert state["next_id"] == 4 and sorted(state["versions"]) == [a, b, c]
    info = reg.resolve(a)
    assert info.adapter_path == reg.versions_dir / a
    assert {p.name for p in info.adapter_path.iterdir()} >= {
        "adapter_model.safetensors",
        "adapter_config.json",
        "cift_adapter.json",
        "meta.json",
        "model_card.md",
    }
    assert info.meta["base_hash"] == "h" and info.meta["batch"] == "b1"
    assert info.meta["parent"] is None and reg.resolve(b).meta["parent"] == BASE_ID
    assert len(info.meta["adapter_sha256"]) == 64 and reg.verify(a)
    assert json.loads((info.adapter_path / "meta.json").read_text()) == info.meta
    assert "not a medical device" in (info.adapter_path / "model_card.md").read_text().lower()
    assert not [p for p in reg.versions_dir.iterdir() if p.name.startswith(".")]


def test_a_crash_during_register_leaves_no_entry_and_the_id_free(
    reg: Registry, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
):
    import cift.registry.store as store

    reg.register(make_adapter(tmp_path / "a", 1.0))
    real = store.write_json_atomic

    def crash(path, obj):
        if Path(path) == reg.state_path:
            raise OSError("disk full")
        real(path, obj)

    monkeypatch.setattr(store, "write_json_atomic", crash)
    with pytest.raises(OSError):
        reg.register(make_adapter(tmp_path / "b", 2.0))
    monkeypatch.undo()
    assert [r["version"] for r in reg.list()] == [BASE_ID, "v0001"]  # v0002 never existed
    assert reg.register(tmp_path / "b") == "v0002"
    assert reg.verify("v0002") and reg.resolve("v0002").meta["version"] == "v0002"


# -- aliases, rollback, proxy --------------------------------------------------------------------


def test_rollback_walks_back_the_stack_then_refuses(reg: Registry, two: tuple[str, str]):
    a, b = two
    reg.promote(a, reason="better")
    reg.promote(b)
    assert reg.rollback() == a
    assert reg.rollback() == BASE_ID
    with pytest.raises(Refused):
        reg.rollback()
    assert reg.aliases()["production"] == BASE_ID
    moves = [(e["action"], e["from"], e["to"]) for e in reg.history() if e["alias"] == "production"]
    assert moves == [
        ("promote", BASE_ID, a),
        ("promote", a, b),
        ("rollback", b, a),
        ("rollback", a, BASE_ID),
    ]
    assert reg.history()[2]["reason"] == "better"


def test_rollback_to_pushes_like_a_promotion(reg: Registry, two: tuple[str, str]):
    a, b = two
    reg.promote(a)
    reg.tag(b, "production")  # a tag of production is a move like any other
    assert reg.rollback(to=a) == a
    assert reg.rollback() == b  # --to pushed b
    assert reg.rollback() == a
    assert reg.rollback() == BASE_ID
    with pytest.raises(NotFound):
        reg.rollback(to="v0042")


def test_promoting_the_current_version_moves_nothing(reg: Registry, two: tuple[str, str]):
    a, _ = two
    reg.promote(a)
    before = reg.history()
    assert reg.promote(a) == a and reg.history() == before


def test_tags_and_user_aliases(reg: Registry, two: tuple[str, str]):
    a, b = two
    reg.tag(a, "candidate")
    reg.tag(b, "my-test_1.x")
    assert reg.resolve("my-test_1.x").version == b
    assert reg.resolve("candidate").version == a
    assert reg.show(a)["aliases"] == ["candidate"]
    with pytest.raises(NotFound):
        reg.resolve("nobody")
    with pytest.raises(InvalidName):
        reg.tag(a, "v0002")  # an alias may not look like an id
    with pytest.raises(InvalidName):
        reg.tag(a, "base")


def test_proxy_moves_with_production_when_shared(reg: Registry, tmp_path: Path):
    shared = reg.register(make_adapter(tmp_path / "s", 1.0), {"proxy_source": "shared"})
    own = reg.register(make_adapter(tmp_path / "o", 2.0), {"proxy_source": "trained"})
    reg.promote(shared, command="test")
    assert reg.aliases() == {"production": shared, "proxy": shared}
    proxy_moves = [e for e in reg.history() if e["alias"] == "proxy"]
    assert [(e["from"], e["to"], e["command"]) for e in proxy_moves] == [(BASE_ID, shared, "test")]
    reg.promote(own)
    assert reg.aliases()["proxy"] == shared  # not shared: the proxy stays
    reg.rollback()
    reg.set_options(proxy_follows_production=True)
    reg.promote(BASE_ID)
    assert reg.aliases() == {"production": BASE_ID, "proxy": BASE_ID}


def test_state_file_changes_on_every_write(reg: Registry, two: tuple[str, str]):
    a, _ = two
    before = reg.state_path.stat()
    revision = json.loads(reg.state_path.read_text())["revision"]
    time.sleep(0.01)
    reg.promote(a)
    after = reg.state_path.stat()
    assert (after.st_mtime_ns, after.st_ino) != (before.st_mtime_ns, before.st_ino)
    assert json.loads(reg.state_path.read_text())["revision"] == revision + 1


# -- validation ------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BAD_NAMES)
def test_path_like_names_are_rejected(reg: Registry, two: tuple[str, str], name: str):
    a, _ = two
    state = reg.state_path.read_bytes()
    for call in (
        lambda: reg.resolve(name),
        lambda: reg.promote(name),
        lambda: reg.rollback(to=name),
        lambda: reg.tag(a, name),
    ):
        with pytest.raises(InvalidName):
            call()
    with pytest.raises(InvalidName):
        reg.version_dir(name)
    assert reg.state_path.read_bytes() == state


def test_only_safetensors_adapters_are_accepted(reg: Registry, tmp_path: Path):
    pickled = make_adapter(tmp_path / "bin", weights=False)
    (pickled / "adapter_model.bin").write_bytes(b"\x80\x04pickle")
    mixed = make_adapter(tmp_path / "mixed", 1.0)
    (mixed / "extra.pt").write_bytes(b"\x80\x04pickle")
    empty = make_adapter(tmp_path / "empty", weights=False)
    corrupt = make_adapter(tmp_path / "corrupt", weights=False)
    (corrupt / "adapter_model.safetensors").write_bytes(os.urandom(64))
    linked = make_adapter(tmp_path / "linked", 2.0)
    (linked / "secret").symlink_to("/etc/passwd")
    foreign = make_adapter(tmp_path / "foreign", 3.0)
    (foreign / "cift_adapter.json").unlink()
    for folder in (pickled, mixed, empty, corrupt, linked, foreign, tmp_path / "missing"):
        with pytest.raises(Refused):
            reg.register(folder)
    assert [r["version"] for r in reg.list()] == [BASE_ID]


# -- crash safety and concurrency ----------------------------------------------------------------


def test_a_failed_rename_during_promote_keeps_the_old_state(
    reg: Registry, two: tuple[str, str], monkeypatch: pytest.MonkeyPatch
):
    a, b = two
    reg.promote(a)
    before = reg.state_path.read_bytes()

    def boom(*args, **kwargs):
        raise OSError("power cut")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        reg.promote(b)
    monkeypatch.undo()
    assert reg.state_path.read_bytes() == before
    assert Registry(reg.root).aliases()["production"] == a
    assert [p.name for p in reg.root.iterdir() if p.name.endswith(".tmp")] == []
    assert reg.promote(b) == b  # the lock was released


WORKER = textwrap.dedent(
    """
    import sys
    from cift.registry import Registry
    reg = Registry(sys.argv[1])
    name, n = sys.argv[2], int(sys.argv[3])
    ids = ["v0001", "v0002"]
    i = 0
    while n < 0 or i < n:
        reg.tag(ids[i % 2], name, command=f"{name}:{i}")
        reg.promote(ids[(i + int(name[-1])) % 2], command=f"{name}:{i}")
        i += 1
    """
)


def _spawn(reg: Registry, name: str, n: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.Popen(
        [sys.executable, "-c", WORKER, str(reg.root), name, str(n)], env=env, cwd=ROOT
    )


def _check_consistent(reg: Registry) -> dict:
    state = json.loads(reg.state_path.read_text())  # valid JSON, never half written
    known = {BASE_ID, *state["versions"]}
    assert set(state["aliases"].values()) <= known
    assert set(state["stacks"]["production"]) <= known
    production = [e for e in state["history"] if e["alias"] == "production"]
    assert len(production) == len(state["stacks"]["production"])  # every move pushed once
    last = state["history"][-1]
    assert last["alias"] is None or state["aliases"][last["alias"]] == last["to"]
    return state


def test_concurrent_processes_lose_no_update(reg: Registry, two: tuple[str, str]):
    procs = [_spawn(reg, f"worker{i}", 10) for i in range(4)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0, 0, 0]
    state = _check_consistent(reg)
    for i in range(4):
        moves = [e["command"] for e in state["history"] if e["alias"] == f"worker{i}"]
        assert moves == [f"worker{i}:{j}" for j in range(10)]


def test_concurrent_threads_lose_no_update(reg: Registry, two: tuple[str, str]):
    a, b = two

    def work(name: str, registry: Registry) -> None:
        for j in range(5):
            registry.tag((a, b)[j % 2], name, command=f"{name}:{j}")

    threads = [
        threading.Thread(target=work, args=(f"t{i}", reg if i % 2 else Registry(reg.root)))
        for i in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = reg.history()
    for i in range(4):
        assert [e["command"] for e in history if e["alias"] == f"t{i}"] == [
            f"t{i}:{j}" for j in range(5)
        ]


def test_sigkill_during_promotes_leaves_a_valid_registry(reg: Registry, two: tuple[str, str]):
    proc = _spawn(reg, "killed1", -1)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if len(reg.history()) >= 2 + 20:
                break
            time.sleep(0.02)
        else:
            pytest.fail("the worker made no progress")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    _check_consistent(reg)
    after = Registry(reg.root)
    target = "v0002" if after.aliases()["production"] == "v0001" else "v0001"
    assert after.promote(target) == target  # a killed holder never leaves the lock stuck


# -- publish -------------------------------------------------------------------------------------


def _write(path: Path, obj: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj))


def make_run(root: Path, decisions: tuple[str, ...] = ("promote", "keep")) -> Path:
    """runs/main as the DAG leaves it: per batch a candidate adapter and the stages' JSON."""
    run = root / "runs" / "main"
    _write(run / "base" / "deployed.json", {"version": "main/base", "adapter_path": None})
    _write(run / "base" / "proxy.json", {"version": "main/base", "adapter_path": None})
    deployed = {"version": "main/base", "adapter_path": None, "decision": "base"}
    proxy = {"version": "main/base", "adapter_path": None, "proxy_source": "base"}
    names = [f"b{i + 1}" for i in range(len(decisions))]
    for i, (batch, decision) in enumerate(zip(names, decisions, strict=True)):
        name, path = f"main/{batch}", f"runs/main/versions/{batch}"
        make_adapter(run / "versions" / batch, float(i + 1))
        _write(run / batch / "train.json", {"n": 4 + i, "replay": 4, "parent": deployed["version"]})
        _write(run / batch / "filter.json", {"filter": "ifd", "n_in": 12, "kept": 4, "steps": {}})
        row = {"n": 2, "accuracy": 0.5, "accuracy_ci": [0.0, 1.0]}
        _write(run / batch / "evaluate.json", {"candidate": {f"test/{batch}": row}})
        promote = decision == "promote"
        _write(run / batch / "decision.json", {"promote": promote, "reasons": []})
        if promote:
            deployed = {"version": name, "adapter_path": path, "decision": "promote"}
            proxy = {"version": name, "adapter_path": path, "proxy_source": "shared"}
        else:
            deployed = {**deployed, "decision": "keep"}
        _write(run / batch / "deployed.json", {**deployed, "batch": batch, "candidate": name})
        _write(run / batch / "proxy.json", proxy)
    (root / "params.yaml").write_text(
        "data:\n  batches:\n" + "".join(f"  - name: {n}\n" for n in names)
    )
    return run


def test_publish_registers_every_candidate_once_and_moves_production(reg: Registry, tmp_path: Path):
    run = make_run(tmp_path)
    result = reg.publish(run)
    assert result["registered"] == ["v0001", "v0002"]
    assert result["versions"] == {"main/b1": "v0001", "main/b2": "v0002"}
    assert reg.aliases() == {"production": "v0001", "proxy": "v0001", "candidate": "v0002"}
    kept = reg.show("v0002")
    assert (kept["parent"], kept["batch"], kept["decision"]) == ("v0001", "b2", "keep")
    assert kept["metrics"]["splits"]["test/b2"]["accuracy_ci"] == [0.0, 1.0]
    assert kept["source"] == "main/b2" and kept["n_samples"] == 5
    assert reg.show("v0001")["proxy_source"] == "shared"
    history = reg.history()
    again = reg.publish(run)
    assert again["registered"] == [] and not again["production_moved"]
    assert reg.history() == history and len(reg.list()) == 3
    reg.rollback()
    assert reg.aliases()["production"] == BASE_ID
    assert reg.publish(run)["production_moved"]  # publish restores the run's final version


def test_publish_a_run_that_kept_the_base(reg: Registry, tmp_path: Path):
    run = make_run(tmp_path, ("keep",))
    result = reg.publish(run, batches=["b1"])
    assert result["registered"] == ["v0001"] and not result["production_moved"]
    assert reg.aliases()["production"] == BASE_ID
    assert reg.show("v0001")["decision"] == "keep"


def test_batch_order_follows_params_then_time(tmp_path: Path):
    run = make_run(tmp_path, ("promote", "promote", "keep"))
    old = time.time() - 100
    os.utime(run / "b3" / "deployed.json", (old, old))
    assert batch_order(run) == ["b1", "b2", "b3"]  # params.yaml's data.batches wins
    (tmp_path / "params.yaml").unlink()
    assert batch_order(run)[0] == "b3"  # else by time
    with pytest.raises(InvalidName):
        Registry(tmp_path / "r").publish(run, batches=["../b1"])


# -- CLI ------------------------------------------------------------------------------------------


def test_cli_commands_json_and_exit_codes(
    reg: Registry, tmp_path: Path, capsys: pytest.CaptureFixture
):
    r = ["--registry", str(reg.root)]
    run = make_run(tmp_path)
    assert cli("registry", "publish", str(run), *r) == 0
    listed = cli_json(capsys, "registry", "list", "--json", *r)
    assert [set(row) for row in listed] == [SUMMARY_KEYS] * 3
    assert listed[1]["aliases"] == ["production", "proxy"]
    shown = cli_json(capsys, "registry", "show", "production", "--json", *r)
    assert set(shown) >= SUMMARY_KEYS and shown["version"] == "v0001"
    assert cli("registry", "promote", "v0002", "--reason", "manual", *r) == 0
    assert cli("registry", "tag", "v0001", "stable", *r) == 0
    assert cli("registry", "rollback", *r) == 0
    assert cli("registry", "rollback", "--to", "stable", *r) == 0
    history = cli_json(capsys, "registry", "history", "--json", *r)
    assert all(set(e) == HISTORY_KEYS for e in history)
    promoted = next(e for e in history if e["action"] == "promote")
    assert promoted["reason"] == "manual"
    assert promoted["command"].startswith("cift registry promote v0002 --reason manual")
    capsys.readouterr()
    for args in (["list"], ["history"], ["show", "v0000"]):
        assert cli("registry", *args, *r) == 0
    assert "VERSION" in capsys.readouterr().out
    # 1: not found or refused
    assert cli("registry", "show", "v0099", *r) == 1
    assert cli("registry", "promote", "nobody", *r) == 1
    assert cli("registry", "promote", "../x", *r) == 1
    assert cli("registry", "tag", "v0001", "a/b", *r) == 1
    assert cli("registry", "publish", str(tmp_path / "nope"), *r) == 1
    empty = ["--registry", str(tmp_path / "empty")]
    assert cli("registry", "rollback", *empty) == 1
    assert "stack is empty" in capsys.readouterr().err
    # 2: usage
    assert cli("registry", *r) == 2
    assert cli("registry", "show", *r) == 2
    assert cli("registry", "promote", "v0001", "--bogus", *r) == 2
    assert cli("registry", "history", "--last", "x", *r) == 2

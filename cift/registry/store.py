"""The model registry: versions (adapter copies + metadata), aliases, the rollback stack, history.

Layout of a registry folder (default `registry/`):

    registry.json          the whole state, only ever replaced whole (temp file + fsync + rename)
    .lock                  the file lock every read-modify-write holds (threads and processes)
    versions/vNNNN/        a copy of the adapter folder + meta.json + model_card.md

`registry.json` = {"format", "revision", "next_id", "versions": {id: meta}, "aliases": {name: id},
"stacks": {"production": [previous ids]}, "history": [entries], "options": {...}}. Ids `v0001`,
`v0002`, … are allocated under the lock and never reused; `v0000` is the base model (no adapter)
and always exists. A fresh registry has `production` and `proxy` on `v0000`.

Crash safety: a version folder is copied into a temp folder and renamed into place *before* the
state naming it is written, so a crash leaves either the old state (the folder is an orphan,
overwritten by the next registration of that id, which was never visible) or the new one.
Names are validated (`^v[0-9]{4,}$` for ids, `^[A-Za-z][A-Za-z0-9_.-]{0,63}$` for aliases), and
paths are only ever built from validated ids, so nothing can escape the registry folder.

The store knows nothing of mirrors or publishing (`cift.registry.api.Registry` adds them): a
subclass declares its own options (`OPTIONS`, checked by `check_option`) and hears of every
committed write (`after_commit`); publishing is a caller of `register` and `move_alias`.
"""

from __future__ import annotations

import copy
import datetime as dt
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from cift.io.jsonl import fsync_dir, write_json_atomic
from cift.models.adapter_format import CONFIG, MOE_CONFIG, WEIGHTS, AdapterError, adapter_digest
from cift.models.adapter_format import read_adapter_meta as _read_adapter_meta

STATE = "registry.json"
LOCK = ".lock"
VERSIONS = "versions"
META = "meta.json"
CARD = "model_card.md"
BASE_ID = "v0000"
PRODUCTION, PROXY, CANDIDATE = "production", "proxy", "candidate"
RESERVED = {"base": BASE_ID}  # names that resolve to a version but cannot be tagged
FORMAT = 1
LOCK_TIMEOUT_S = 60.0
STALE_TEMP_S = 6 * 3600  # a temp version folder this old belongs to a dead registration

VERSION_RE = re.compile(r"v[0-9]{4,}")
ALIAS_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,63}")
FORBIDDEN_WEIGHTS = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib", ".npy", ".npz")
HISTORY_KEYS = ("ts", "action", "alias", "from", "to", "reason", "command")
SUMMARY_KEYS = ("version", "aliases", "parent", "batch", "created", "metrics")
OWNED_META = {"version", "created", "base_hash", "adapter_sha256", "aliases", "adapter_path"}
STORE_OPTIONS = {"proxy_follows_production": False}  # move `proxy` on every production move


class RegistryError(Exception):
    """Anything the registry refuses; the CLI exits 1 on it with the message."""


class InvalidName(RegistryError, ValueError):
    """A version id or alias that is malformed or could leave the registry folder."""


class NotFound(RegistryError, LookupError):
    """A version or alias the registry does not hold."""


class Refused(RegistryError):
    """A valid request the registry will not carry out (empty rollback stack, bad adapter…)."""


@dataclass(frozen=True)
class VersionInfo:
    """What a name resolves to: the id, the adapter folder inside the registry (None for the
    base model) and the version's metadata."""

    version: str
    adapter_path: Path | None
    meta: dict = field(default_factory=dict)


def now_iso() -> str:
    """UTC now, ISO 8601 with milliseconds and a `Z`."""
    stamp = dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds")
    return stamp.replace("+00:00", "Z")


def format_id(number: int) -> str:
    return f"v{number:04d}"


def is_version_id(name: object) -> bool:
    return isinstance(name, str) and VERSION_RE.fullmatch(name) is not None


def check_version_id(name: object) -> str:
    if not is_version_id(name):
        raise InvalidName(f"invalid version id {name!r}: expected v followed by ≥ 4 digits")
    return str(name)


def check_alias(name: object) -> str:
    """A user-settable alias name; ids, `base` and anything path-like are refused."""
    if not isinstance(name, str) or ALIAS_RE.fullmatch(name) is None:
        raise InvalidName(
            f"invalid alias {name!r}: expected a letter then up to 63 of [A-Za-z0-9_.-]"
        )
    if is_version_id(name):
        raise InvalidName(f"invalid alias {name!r}: looks like a version id")
    if name in RESERVED:
        raise InvalidName(f"invalid alias {name!r}: reserved (always {RESERVED[name]})")
    return name


def check_name(name: object) -> str:
    """A version id or an alias (what `resolve` accepts)."""
    if is_version_id(name) or (isinstance(name, str) and name in RESERVED):
        return str(name)
    if isinstance(name, str) and ALIAS_RE.fullmatch(name) is not None:
        return name
    raise InvalidName(f"invalid version or alias {name!r}: expected an id like v0003 or an alias")


def base_meta() -> dict:
    return {
        "version": BASE_ID,
        "parent": None,
        "batch": None,
        "filter": None,
        "metrics": {},
        "created": None,
        "git_rev": None,
        "dvc_rev": None,
        "base_hash": None,
        "adapter_sha256": None,
        "source": "base",
        "description": "the base model, no adapter",
    }


def empty_state(options: dict | None = None) -> dict:
    """A registry that holds nothing but the base; `options`: the option defaults."""
    return {
        "format": FORMAT,
        "revision": 0,
        "next_id": 1,
        "versions": {},
        "aliases": {PRODUCTION: BASE_ID, PROXY: BASE_ID},
        "stacks": {PRODUCTION: []},
        "history": [],
        "options": copy.deepcopy(STORE_OPTIONS if options is None else options),
    }


# ---------------------------------------------------------------------------------------------
# adapter folders


def check_adapter_folder(folder: str | Path) -> Path:
    """Refuse anything but a plain folder of safetensors weights (no pickles, no symlinks)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Refused(f"{folder}: not an adapter folder")
    for path in folder.rglob("*"):
        if path.is_symlink():
            raise Refused(f"{path}: symbolic links are not accepted in an adapter folder")
        if path.is_file() and path.name.lower().endswith(FORBIDDEN_WEIGHTS):
            raise Refused(f"{path}: only safetensors weights are accepted (found a pickle format)")
    weights = folder / WEIGHTS
    if not weights.is_file():
        raise Refused(f"{folder}: no {WEIGHTS} (only safetensors adapters are accepted)")
    check_safetensors(weights)
    if not (folder / CONFIG).is_file() and not (folder / MOE_CONFIG).is_file():
        raise Refused(f"{folder}: no {CONFIG} (nor {MOE_CONFIG})")
    return folder


def check_safetensors(path: Path) -> None:
    """The header of a safetensors file parses (8-byte length + a JSON object), without loading."""
    size = path.stat().st_size
    with path.open("rb") as handle:
        head = handle.read(8)
        if len(head) < 8:
            raise Refused(f"{path}: not a safetensors file (too short)")
        length = int.from_bytes(head, "little")
        if length <= 0 or length > min(size - 8, 100 * 1024 * 1024):
            raise Refused(f"{path}: not a safetensors file (bad header length)")
        try:
            header = json.loads(handle.read(length).decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as exc:
            raise Refused(f"{path}: not a safetensors file (bad header: {exc})") from exc
    if not isinstance(header, dict):
        raise Refused(f"{path}: not a safetensors file (header is not an object)")


def read_adapter_meta(folder: str | Path) -> dict:
    """`cift_adapter.json` ({"base_hash", "metadata"}); a missing or broken one is `Refused`."""
    try:
        return _read_adapter_meta(folder)
    except AdapterError as exc:
        raise Refused(str(exc)) from exc


def _copy_adapter(src: Path, dst: Path) -> None:
    """Regular files only (hidden ones skipped), fsynced, into an existing empty folder."""
    for path in sorted(src.rglob("*")):
        rel = path.relative_to(src)
        if any(part.startswith(".") for part in rel.parts):
            continue
        target = dst / rel
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        elif path.is_file():
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(path, target)
            _fsync_file(target)


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def git_rev(where: Path) -> str | None:
    """`git rev-parse HEAD` of the repository holding `where` (None when there is none)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    rev = out.stdout.strip()
    return rev if out.returncode == 0 and re.fullmatch(r"[0-9a-f]{40,64}", rev) else None


def dvc_rev(where: Path) -> str | None:
    """The DVC state the adapter came from: `sha256:` of the nearest dvc.lock (None if none)."""
    here = where.absolute()
    for folder in (here, *here.parents):
        lock = folder / "dvc.lock"
        if lock.is_file():
            try:
                return "sha256:" + hashlib.sha256(lock.read_bytes()).hexdigest()
            except OSError:
                return None
    return None


# ---------------------------------------------------------------------------------------------
# the registry


class Store:
    """A registry folder. Reads never lock (the state file is only ever replaced whole); every
    write is a read-modify-write of `registry.json` under `registry/.lock`.

    Extension points: `OPTIONS` (option -> default; a mapping default is merged under what the
    state holds), `check_option` (validates a new value) and `after_commit` (told of each
    committed write's new history entries, after the lock is released)."""

    OPTIONS: ClassVar[dict[str, Any]] = STORE_OPTIONS

    def __init__(self, root: str | Path = "registry", *, lock_timeout: float = LOCK_TIMEOUT_S):
        self.root = Path(root).absolute()
        self.state_path = self.root / STATE
        self.versions_dir = self.root / VERSIONS
        self.lock_timeout = lock_timeout
        self._lock: Any = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.root)!r})"

    # -- state --------------------------------------------------------------------------------

    def load(self) -> dict:
        """The current state (a fresh one when the registry does not exist yet)."""
        try:
            text = self.state_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return empty_state(self.OPTIONS)
        try:
            state = json.loads(text)
        except ValueError as exc:
            raise RegistryError(f"{self.state_path}: not valid JSON ({exc})") from exc
        if not isinstance(state, dict) or not isinstance(state.get("versions"), dict):
            raise RegistryError(f"{self.state_path}: not a cift registry state")
        base = empty_state(self.OPTIONS)
        for key, value in base.items():
            state.setdefault(key, value)
        state["stacks"].setdefault(PRODUCTION, [])
        options = state["options"]
        if not isinstance(options, dict):
            raise RegistryError(f"{self.state_path}: options is not an object")
        for key, value in base["options"].items():  # registries older than an option
            options.setdefault(key, value)
            if isinstance(value, dict):  # a mapping option: defaults under what is stored
                found = options[key]
                options[key] = dict(value) | found if isinstance(found, dict) else dict(value)
        return state

    def _file_lock(self) -> Any:
        if self._lock is None:
            from filelock import FileLock

            self.root.mkdir(parents=True, exist_ok=True)
            self._lock = FileLock(str(self.root / LOCK), timeout=self.lock_timeout)
        return self._lock

    @contextmanager
    def _locked(self) -> Iterator[None]:
        from filelock import Timeout

        try:
            with self._file_lock():
                yield
        except Timeout as exc:
            raise RegistryError(
                f"{self.root / LOCK}: still locked by another writer after {self.lock_timeout} s"
            ) from exc

    @contextmanager
    def transaction(self) -> Iterator[dict]:
        """Lock, load, let the caller change the state, write it back atomically (only when it
        changed). An exception inside leaves registry.json untouched. Once written and unlocked,
        the write's new history entries go to `after_commit`."""
        with self._locked():
            state = self.load()
            before = copy.deepcopy(state)
            yield state
            if state == before:
                return
            state["revision"] = int(before.get("revision", 0)) + 1
            self.root.mkdir(parents=True, exist_ok=True)
            write_json_atomic(self.state_path, state)
            entries = copy.deepcopy(state["history"][len(before["history"]) :])
            options = copy.deepcopy(state["options"])
        if entries:
            self.after_commit(entries, options)

    def after_commit(self, entries: list[dict], options: dict) -> None:
        """A committed write's new history entries and the options it left (nothing here)."""

    # -- reading ------------------------------------------------------------------------------

    def aliases(self) -> dict[str, str]:
        return dict(self.load()["aliases"])

    def _meta(self, state: dict, version: str) -> dict:
        if version == BASE_ID:
            return base_meta()
        meta = state["versions"].get(version)
        if meta is None:
            raise NotFound(f"version {version} is not in the registry {self.root}")
        return meta

    def _resolve_id(self, state: dict, name: str) -> str:
        name = check_name(name)
        if name in RESERVED:
            return RESERVED[name]
        if is_version_id(name):
            self._meta(state, name)
            return name
        target = state["aliases"].get(name)
        if target is None:
            raise NotFound(f"alias {name!r} is not set in the registry {self.root}")
        if not is_version_id(target):
            raise RegistryError(f"alias {name!r} points at a malformed id {target!r}")
        self._meta(state, target)
        return target

    def version_dir(self, version: str) -> Path:
        """Where version `version`'s adapter copy lives (the id is validated first)."""
        version = check_version_id(version)
        if version == BASE_ID:
            raise InvalidName(f"{BASE_ID} is the base model: it has no adapter folder")
        path = self.versions_dir / version
        if path.parent != self.versions_dir:  # cannot happen with a valid id; belt and braces
            raise InvalidName(f"version {version!r} escapes {self.versions_dir}")
        return path

    def resolve(self, name: str) -> VersionInfo:
        """An id (`v0003`), an alias (`production`) or `base` -> the version to load."""
        state = self.load()
        version = self._resolve_id(state, name)
        meta = copy.deepcopy(self._meta(state, version))
        if version == BASE_ID:
            return VersionInfo(BASE_ID, None, meta)
        folder = self.version_dir(version)
        if not (folder / WEIGHTS).is_file():
            raise RegistryError(f"version {version}: its adapter {folder / WEIGHTS} is missing")
        return VersionInfo(version, folder, meta)

    def verify(self, name: str) -> bool:
        """True when the stored adapter's sha256 still matches the registered one."""
        info = self.resolve(name)
        if info.adapter_path is None:
            return True
        return adapter_digest(info.adapter_path) == info.meta.get("adapter_sha256")

    def _record(self, state: dict, version: str) -> dict:
        meta = self._meta(state, version)
        names = sorted(a for a, v in state["aliases"].items() if v == version)
        record = {key: meta.get(key) for key in SUMMARY_KEYS}
        record["version"], record["aliases"] = version, names
        record["metrics"] = meta.get("metrics") or {}
        extra = {k: v for k, v in meta.items() if k not in record}
        if version != BASE_ID:
            extra["adapter_path"] = str(self.versions_dir / version)
        else:
            extra["adapter_path"] = None
        return record | extra

    def list(self) -> list[dict]:
        """Every version, `v0000` first: the summary keys (version, aliases, parent, batch,
        created, metrics) followed by the rest of its metadata."""
        state = self.load()
        valid = (v for v in state["versions"] if is_version_id(v))
        ids = [BASE_ID, *sorted(valid, key=lambda v: int(v[1:]))]
        return [self._record(state, v) for v in ids]

    def show(self, name: str) -> dict:
        state = self.load()
        return self._record(state, self._resolve_id(state, name))

    def history(self) -> list[dict]:
        return [dict(entry) for entry in self.load()["history"]]

    def find_sha(self, sha: str) -> str | None:
        """The id registered for these adapter weights, if any."""
        return _find_sha(self.load(), sha)

    # -- writing ------------------------------------------------------------------------------

    def check_option(self, name: str, value: Any, current: Any) -> Any:
        """The value to store for option `name` (InvalidName when it is not acceptable)."""
        if name == "proxy_follows_production" and not isinstance(value, bool):
            raise InvalidName("option 'proxy_follows_production' must be true or false")
        return value

    def set_options(self, **options: Any) -> dict:
        """Set registry options (see `OPTIONS`); returns them all."""
        known = set(self.OPTIONS)
        unknown = set(options) - known
        if unknown:
            raise InvalidName(f"unknown registry option(s) {sorted(unknown)}; known: {known}")
        with self.transaction() as state:
            for name, value in options.items():
                state["options"][name] = self.check_option(name, value, state["options"].get(name))
            return copy.deepcopy(state["options"])

    def register(
        self, adapter_dir: str | Path, meta: dict | None = None, *, command: str | None = None
    ) -> str:
        """Copy an adapter folder into the registry as a new version; returns its id.

        Idempotent: weights already registered (same sha256) return the existing id. `meta` may
        give parent (an id or alias), batch, filter, metrics, source, proxy_source, …; the
        registry fills version, created, git_rev, dvc_rev, base_hash and adapter_sha256.
        """
        src = check_adapter_folder(adapter_dir)
        meta = dict(meta or {})
        sha = adapter_digest(src)
        existing = self.find_sha(sha)
        if existing:
            return existing
        adapter_meta = read_adapter_meta(src)
        fields = {
            "git_rev": meta.pop("git_rev") if "git_rev" in meta else git_rev(src),
            "dvc_rev": meta.pop("dvc_rev") if "dvc_rev" in meta else dvc_rev(src),
            "base_hash": adapter_meta.get("base_hash"),
            "adapter_sha256": sha,
        }
        self.root.mkdir(parents=True, exist_ok=True)
        self.versions_dir.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=self.versions_dir))
        try:
            os.chmod(tmp, 0o755)  # mkdtemp makes it private; a server may run as another user
            _copy_adapter(src, tmp)
            if adapter_digest(tmp) != sha:
                raise RegistryError(f"{src}: the adapter changed while it was being copied")
            with self.transaction() as state:
                found = _find_sha(state, sha)
                if found:
                    return found
                version = format_id(int(state["next_id"]))
                parent = meta.pop("parent", None)
                if parent is not None:
                    parent = self._resolve_id(state, parent)
                record = {
                    "version": version,
                    "parent": parent,
                    "batch": meta.pop("batch", None),
                    "filter": meta.pop("filter", None),
                    "metrics": meta.pop("metrics", None) or {},
                    "created": now_iso(),
                    **fields,
                    "source": meta.pop("source", None),
                    **{k: v for k, v in meta.items() if k not in OWNED_META},
                }
                json.dumps(record)  # refuse unserialisable metadata before touching anything
                self._write_version_files(tmp, record)
                self._sweep_stale_temps(tmp)
                dest = self.version_dir(version)
                if dest.exists():  # an orphan from a crash: never visible, so never used
                    shutil.rmtree(dest)
                os.rename(tmp, dest)
                fsync_dir(self.versions_dir)
                state["versions"][version] = record
                state["next_id"] = int(state["next_id"]) + 1
                _append_history(state, "register", None, None, version, None, command)
                return version
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)

    def _sweep_stale_temps(self, keep: Path) -> None:
        """Temp folders left by registrations killed long ago (under the lock; best effort)."""
        cutoff = time.time() - STALE_TEMP_S
        for path in self.versions_dir.glob(".tmp-*"):
            try:
                if path != keep and path.is_dir() and path.stat().st_mtime < cutoff:
                    shutil.rmtree(path, ignore_errors=True)
            except OSError:
                continue

    def _write_version_files(self, folder: Path, record: dict) -> None:
        from cift.registry.cards import render_card

        write_json_atomic(folder / META, record)
        card = folder / CARD
        card.write_text(render_card(record), encoding="utf-8")
        _fsync_file(card)

    def promote(self, version: str, reason: str | None = None, command: str | None = None) -> str:
        """Move `production` to `version` (pushing the previous one on the rollback stack)."""
        return self.tag(version, PRODUCTION, reason=reason, command=command, action="promote")

    def tag(
        self,
        version: str,
        alias: str,
        reason: str | None = None,
        command: str | None = None,
        *,
        action: str = "tag",
    ) -> str:
        """Point `alias` at `version`; returns the id. A move of `production` pushes its previous
        value on the rollback stack (and moves `proxy` too when the version's proxy is shared)."""
        alias = check_alias(alias)
        with self.transaction() as state:
            target = self._resolve_id(state, version)
            self._move(state, alias, target, action, reason, command, push=True)
            return target

    def rollback(
        self, to: str | None = None, reason: str | None = None, command: str | None = None
    ) -> str:
        """Without `to`: pop the rollback stack and move `production` there (repeated rollbacks
        walk back); Refused on an empty stack. With `to`: a move that pushes, like promote."""
        with self.transaction() as state:
            if to is not None:
                target = self._resolve_id(state, to)
                self._move(state, PRODUCTION, target, "rollback", reason, command, push=True)
                return target
            stack = state["stacks"][PRODUCTION]
            current = state["aliases"].get(PRODUCTION)
            rest = list(stack)
            while rest and (rest[-1] == current or not self._known(state, rest[-1])):
                rest.pop()
            if not rest:
                raise Refused("nothing to roll back to: the production stack is empty")
            target = rest.pop()
            state["stacks"][PRODUCTION] = rest
            self._move(state, PRODUCTION, target, "rollback", reason, command, push=False)
            return target

    def _known(self, state: dict, version: object) -> bool:
        return is_version_id(version) and (version == BASE_ID or version in state["versions"])

    def _move(
        self,
        state: dict,
        alias: str,
        target: str,
        action: str,
        reason: str | None,
        command: str | None,
        *,
        push: bool,
    ) -> bool:
        previous = state["aliases"].get(alias)
        if previous == target:
            return False
        if alias == PRODUCTION and push and previous is not None:
            state["stacks"][PRODUCTION].append(previous)
        state["aliases"][alias] = target
        _append_history(state, action, alias, previous, target, reason, command)
        if alias == PRODUCTION:
            shared = self._meta(state, target).get("proxy_source") == "shared"
            if shared or state["options"].get("proxy_follows_production"):
                before = state["aliases"].get(PROXY)
                if before != target:
                    state["aliases"][PROXY] = target
                    why = "proxy follows production" + (" (shared)" if shared else "")
                    _append_history(state, action, PROXY, before, target, why, command)
        return True

    def move_alias(
        self,
        alias: str,
        version: str,
        action: str,
        reason: str | None = None,
        command: str | None = None,
    ) -> bool:
        """A move with a custom history action (publish uses it); False when nothing moved."""
        alias = check_alias(alias)
        with self.transaction() as state:
            return self._move(
                state, alias, self._resolve_id(state, version), action, reason, command, push=True
            )


def _find_sha(state: dict, sha: str) -> str | None:
    for version, meta in state["versions"].items():
        if meta.get("adapter_sha256") == sha:
            return version
    return None


def _append_history(
    state: dict,
    action: str,
    alias: str | None,
    previous: str | None,
    target: str | None,
    reason: str | None,
    command: str | None,
) -> None:
    values = (now_iso(), action, alias, previous, target, reason, command)
    state["history"].append(dict(zip(HISTORY_KEYS, values, strict=True)))


def summary(record: dict) -> dict:
    """The keys `list --json` / `show --json` promise, in order."""
    return {key: record.get(key) for key in SUMMARY_KEYS}

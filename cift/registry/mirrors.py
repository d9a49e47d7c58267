"""Optional mirrors of the registry, off by default: git tags in GTO's format and W&B aliases.

Both run *after* a registry write has been committed and its lock released, and never raise: a
mirror that fails (no git repository, no git identity, W&B unreachable…) is reported in the
returned report, in `Registry.mirror_reports`, in `registry/mirrors.jsonl` and, from the CLI, as
a warning on stderr. The registry itself is never rolled back or touched by a mirror.

Git tags follow GTO (iterative/gto, `gto/constants.py` `tag_re`, `gto/tag.py` `name_tag`):

- registration: annotated tag `{artifact}@v{semver}`. GTO only parses semver versions (`model@v3`
  is not a GTO tag), so registry id `vNNNN` is mapped to `v0.0.N` (`v0003` -> `model@v0.0.3`,
  the base `v0000` -> `model@v0.0.0`).
- stage assignment: annotated tag `{artifact}#{stage}#{N}`, unassignment `{artifact}#{stage}!#{N}`,
  with N one more than the largest counter among the artifact's tags (GTO's own rule). The stage is
  the alias (`production` -> `prod`); an alias that is not a valid GTO name is skipped. A move
  unassigns the stage from the version that held it and assigns it to the new one, so GTO sees
  exactly one version per stage, as the registry does. Stage tags are dated at least one second
  apart (GIT_COMMITTER_DATE), since GTO orders events by tag time.
- GTO identifies a version by the commit its tag points at (it refuses two versions on one commit,
  and resolves an assignment to a version through its commit). Adapters registered from the same
  checkout share `git_rev`, so every registry version gets a commit of its own: `git commit-tree`
  with the tree of the version's `git_rev` (HEAD when that is not in this repository) and that
  revision as its parent. No branch, index or working tree is touched; the tag keeps the commit
  reachable. Tags are created in the repository holding the registry folder and never pushed;
  an existing tag is left alone.

W&B: on an alias move, a short `job_type="registry"` run logs the version's adapter folder as an
artifact (`type="model"`) with aliases `[alias, "cift-vNNNN"]` (W&B reserves `v<number>` for its
own version names, hence the prefix); the base `v0000` is logged as a one-file artifact. The mode
comes from `WANDB_MODE` (default offline: a local run under `wandb_dir` to `wandb sync` later).
"""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

from cift.registry.store import (
    BASE_ID,
    PRODUCTION,
    InvalidName,
    RegistryError,
    Store,
    base_meta,
    check_alias,
    is_version_id,
    now_iso,
)

MIRROR_DEFAULTS = {
    "git_tags": False,  # annotated tags in GTO's format in the git repo holding the registry
    "wandb": False,  # a W&B artifact with the alias on every alias move
    "git_artifact": "model",  # GTO artifact name: model@v0.0.3, model#prod#4
    "wandb_project": "cift",
    "wandb_artifact": "cift-model",
    "wandb_dir": "logs/wandb",  # a relative one is taken from the registry folder's parent
}
MIRROR_LOG = "mirrors.jsonl"
MIRROR_LOCK = ".mirrors.lock"
MIRROR_LOCK_TIMEOUT_S = 60.0
GIT_TIMEOUT_S = 30
STAGES = {PRODUCTION: "prod"}  # registry alias -> GTO stage; other aliases map to themselves
WANDB_VERSION_ALIAS = "cift-{version}"

# GTO's name (artifacts, stages) without the `/` of nested names: letters, digits, `_` and `-`,
# starting and ending with a letter or a digit (gto/constants.py `name`)
GTO_NAME_RE = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9_-]*[A-Za-z0-9])?")
_GTO_STAGE = r"[A-Za-z0-9](?:[A-Za-z0-9/_-]*[A-Za-z0-9])?"
_SEMVER = r"(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)\.(?:0|[1-9][0-9]*)(?:[-+][0-9A-Za-z.+-]*)?"
WANDB_NAME_RE = re.compile(r"[A-Za-z0-9_.-]{1,128}")


class MirrorError(Exception):
    """A mirror step that failed; caught and reported, never raised to the registry's caller."""


# ---------------------------------------------------------------------------------------------
# options


def mirror_options(state: dict) -> dict:
    """The mirror options of a state, defaults filled in (older registry.json files lack them)."""
    found = (state.get("options") or {}).get("mirrors")
    return copy.deepcopy(MIRROR_DEFAULTS) | (found if isinstance(found, dict) else {})


def check_artifact_name(name: object) -> str:
    """An alias-like name that GTO also accepts as an artifact name (`model`, `cift-model`)."""
    check_alias(name)
    if not GTO_NAME_RE.fullmatch(str(name)):
        raise InvalidName(
            f"invalid git artifact name {name!r}: GTO takes letters, digits, '_' and '-', "
            "starting and ending with a letter or a digit"
        )
    return str(name)


def check_mirror_options(values: dict, current: dict | None = None) -> dict:
    """`current` (defaults when None) updated with `values`, every known key validated."""
    if not isinstance(values, dict):
        raise InvalidName(f"mirror options must be a mapping, not {type(values).__name__}")
    unknown = set(values) - set(MIRROR_DEFAULTS)
    if unknown:
        raise InvalidName(
            f"unknown mirror option(s) {sorted(unknown)}; known: {sorted(MIRROR_DEFAULTS)}"
        )
    merged = copy.deepcopy(MIRROR_DEFAULTS) | dict(current or {}) | dict(values)
    for key in ("git_tags", "wandb"):
        if not isinstance(merged[key], bool):
            raise InvalidName(f"mirror option {key!r} must be true or false, not {merged[key]!r}")
    check_artifact_name(merged["git_artifact"])
    for key in ("wandb_project", "wandb_artifact"):
        if not isinstance(merged[key], str) or not WANDB_NAME_RE.fullmatch(merged[key]):
            raise InvalidName(f"invalid {key} {merged[key]!r}: expected 1 to 128 of [A-Za-z0-9_.-]")
    folder = merged["wandb_dir"]
    if not isinstance(folder, str) or not folder.strip() or "\0" in folder:
        raise InvalidName(f"invalid wandb_dir {folder!r}: expected a folder path")
    return merged


# ---------------------------------------------------------------------------------------------
# names


def gto_version(version: str) -> str:
    """Registry id -> the semver GTO parses: `v0003` -> `v0.0.3`, `v0000` -> `v0.0.0`."""
    if not is_version_id(version):
        raise InvalidName(f"invalid version id {version!r}")
    return f"v0.0.{int(version[1:])}"


def gto_stage(alias: str) -> str | None:
    """The GTO stage an alias mirrors to (`production` -> `prod`); None when GTO would refuse it."""
    stage = STAGES.get(alias, alias)
    return stage if GTO_NAME_RE.fullmatch(stage) else None


def registration_tag(artifact: str, version: str) -> str:
    return f"{artifact}@{gto_version(version)}"


def _tag_re(artifact: str) -> re.Pattern[str]:
    """Every GTO tag of one artifact (gto/constants.py `tag_re`, for a fixed artifact name)."""
    return re.compile(
        rf"^{re.escape(artifact)}"
        rf"(?:#(?P<stage>{_GTO_STAGE})(?P<cancel>!?)|@(?P<version>v{_SEMVER})!?"
        rf"|@(?:deprecated|created))(?:#(?P<counter>[0-9]+))?$"
    )


# ---------------------------------------------------------------------------------------------
# running the mirrors


def _events(entries: list[dict]) -> tuple[list[str], dict[str, dict]]:
    """History entries of one write -> (versions registered, {alias: its last move entry})."""
    registered: list[str] = []
    moves: dict[str, dict] = {}
    for entry in entries:
        if entry.get("action") == "register" and is_version_id(entry.get("to")):
            registered.append(str(entry["to"]))
        elif entry.get("alias"):
            moves.pop(entry["alias"], None)
            moves[entry["alias"]] = entry
    return registered, moves


def run_mirrors(registry: Store, entries: list[dict]) -> dict | None:
    """Mirror one registry write (its new history entries) to the enabled mirrors.

    Reads the registry's *current* state, so mirrors of concurrent writes that finish in another
    order still end on what the registry holds. Returns the report (None when every mirror is
    off); never raises.
    """
    try:
        state = registry.load()
        options = mirror_options(state)
    except Exception as exc:  # a mirror never fails the registry
        return {"ts": now_iso(), "warnings": [f"mirrors: cannot read the registry: {exc}"]}
    if not (options["git_tags"] or options["wandb"]):
        return None
    registered, moves = _events(entries)
    report: dict[str, Any] = {
        "ts": now_iso(),
        "registered": registered,
        "moved": {alias: entry.get("to") for alias, entry in moves.items()},
        "warnings": [],
    }
    if options["git_tags"] and (registered or moves):
        report["git"] = _guard(report, "git tags", mirror_git, registry, state, registered, moves)
    if options["wandb"] and moves:
        report["wandb"] = _guard(report, "wandb", mirror_wandb, registry, state, moves)
    _append_log(registry, report)
    return report


def _guard(report: dict, name: str, func: Any, *args: Any) -> dict:
    try:
        result = func(*args)
    except Exception as exc:  # reported, never raised
        result = {"error": f"{type(exc).__name__}: {exc}", "warnings": []}
        result["warnings"].append(f"{name} mirror failed: {result['error']}")
    report["warnings"].extend(result.get("warnings", []))
    return result


def _append_log(registry: Store, report: dict) -> None:
    """One JSON line per mirrored write in `registry/mirrors.jsonl` (best effort)."""
    try:
        with (registry.root / MIRROR_LOG).open("a", encoding="utf-8") as handle:
            handle.write(json.dumps(report, ensure_ascii=False, default=str) + "\n")
    except OSError as exc:
        report["warnings"].append(f"mirrors: cannot append to {registry.root / MIRROR_LOG}: {exc}")


# ---------------------------------------------------------------------------------------------
# git tags (GTO)


class _Git:
    def __init__(self, top: Path):
        self.top = top

    def run(self, *args: str, env: dict | None = None) -> str:
        try:
            out = subprocess.run(
                ["git", "-C", str(self.top), *args],
                capture_output=True,
                text=True,
                timeout=GIT_TIMEOUT_S,
                check=False,
                env=None if env is None else os.environ | env,
            )
        except (OSError, subprocess.SubprocessError) as exc:
            raise MirrorError(f"git {args[0]}: {exc}") from exc
        if out.returncode != 0:
            raise MirrorError(f"git {args[0]}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def ok(self, *args: str) -> bool:
        try:
            self.run(*args)
        except MirrorError:
            return False
        return True

    def commit_of(self, rev: str) -> str | None:
        try:
            return self.run("rev-parse", "--verify", "--quiet", f"{rev}^{{commit}}").strip()
        except MirrorError:
            return None


def git_toplevel(where: Path) -> Path | None:
    """The work tree holding `where` (None outside any git repository, or without git)."""
    try:
        out = subprocess.run(
            ["git", "-C", str(where), "rev-parse", "--show-toplevel"],
            capture_output=True,
            text=True,
            timeout=GIT_TIMEOUT_S,
            check=False,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    top = out.stdout.strip()
    return Path(top) if out.returncode == 0 and top else None


class _Tags:
    """The artifact's GTO tags: name -> (commit, date, parsed match)."""

    def __init__(self, git: _Git, artifact: str):
        self.git, self.artifact, self.pattern = git, artifact, _tag_re(artifact)
        self.load()

    def load(self) -> None:
        fmt = "%(refname:strip=2)%09%(objecttype)%09%(objectname)%09%(*objectname)%09"
        fmt += "%(taggerdate:unix)"
        self.tags: dict[str, tuple[str, int, re.Match[str] | None]] = {}
        self.names: set[str] = set()
        for line in self.git.run("for-each-ref", f"--format={fmt}", "refs/tags").splitlines():
            name, kind, obj, deref, date = (line.split("\t") + [""] * 5)[:5]
            self.names.add(name)
            match = self.pattern.fullmatch(name)
            if match:
                commit = deref if kind == "tag" and deref else obj
                self.tags[name] = (commit, int(date) if date.isdigit() else 0, match)

    def add(self, name: str, commit: str, date: int) -> None:
        self.names.add(name)
        self.tags[name] = (commit, date, self.pattern.fullmatch(name))

    def counter(self) -> int:
        """GTO's next counter: one more than the largest among the artifact's tags."""
        found = [int(m["counter"]) for _, _, m in self.tags.values() if m and m["counter"]]
        return max(found, default=0) + 1

    def stage_date(self, stage: str) -> int:
        """Now, or one second after the stage's newest tag (GTO orders events by tag time)."""
        dates = [d for _, d, m in self.tags.values() if m and m["stage"] == stage]
        return max(int(time.time()), max(dates, default=0) + 1)

    def active(self, stage: str) -> set[str]:
        """The commits holding `stage` now: the last stage event on each commit is an assign."""
        events = sorted(
            (date, int(m["counter"] or 0), commit, m["cancel"] != "!")
            for commit, date, m in self.tags.values()
            if m and m["stage"] == stage
        )
        last: dict[str, bool] = {}
        for _, _, commit, assigned in events:
            last[commit] = assigned
        return {commit for commit, assigned in last.items() if assigned}


def mirror_git(registry: Store, state: dict, registered: list[str], moves: dict[str, dict]) -> dict:
    """Registration tags for `registered` (and every moved alias's version), stage tags for
    every moved alias, in the git repository holding the registry folder."""
    options = mirror_options(state)
    artifact = check_artifact_name(options["git_artifact"])
    result: dict[str, Any] = {"repo": None, "created": [], "existing": [], "warnings": []}
    top = git_toplevel(registry.root)
    if top is None:
        result["skipped"] = True
        result["warnings"].append(
            f"git tags skipped: the registry {registry.root} is not inside a git repository"
        )
        return result
    result["repo"] = str(top)
    git = _Git(top)
    if git.commit_of("HEAD") is None:
        result["skipped"] = True
        result["warnings"].append(f"git tags skipped: {top} has no commit yet")
        return result
    from filelock import FileLock, Timeout

    try:
        with FileLock(str(registry.root / MIRROR_LOCK), timeout=MIRROR_LOCK_TIMEOUT_S):
            _sync_git(git, registry, state, artifact, registered, moves, result)
    except Timeout:
        result["warnings"].append(f"git tags skipped: {registry.root / MIRROR_LOCK} stayed locked")
    return result


def _sync_git(
    git: _Git,
    registry: Store,
    state: dict,
    artifact: str,
    registered: list[str],
    moves: dict[str, dict],
    result: dict,
) -> None:
    tags = _Tags(git, artifact)
    commits: dict[str, str | None] = {}

    def version_commit(version: str) -> str | None:
        if version not in commits:
            commits[version] = _ensure_registration(git, registry, state, tags, version, result)
        return commits[version]

    for version in registered:
        version_commit(version)
    for alias, entry in moves.items():
        stage = gto_stage(alias)
        if stage is None:
            result["warnings"].append(
                f"git tags: alias {alias!r} is not a valid GTO stage name; not mirrored"
            )
            continue
        target = state["aliases"].get(alias)
        want = version_commit(target) if is_version_id(target) else None
        if is_version_id(target) and want is None:
            continue  # its registration tag could not be made: reported already
        for commit in sorted(tags.active(stage) - {want}):
            held = _version_at(tags, commit) or commit[:12]
            message = (
                f"cift registry: {alias} left {held} (now {target or 'unset'})\n\n"
                + _details(alias, entry)
            )
            _stage_tag(git, tags, stage, "!", commit, message, result)
        if want is not None and want not in tags.active(stage):
            message = f"cift registry: {alias} -> {target}\n\n" + _details(alias, entry, target)
            _stage_tag(git, tags, stage, "", want, message, result)


def _version_at(tags: _Tags, commit: str) -> str | None:
    """The registry id registered at `commit` (`model@v0.0.3` -> `v0003`), else its GTO version."""
    for c, _, m in tags.tags.values():
        if c == commit and m and m["version"]:
            found = re.fullmatch(r"v0\.0\.([0-9]+)", m["version"])
            return f"v{int(found[1]):04d}" if found else m["version"]
    return None


def _details(alias: str, entry: dict, target: str | None = None) -> str:
    lines = [f"alias: {alias}"]
    if target is not None:
        lines.append(f"registry id: {target}")
    if entry.get("to") == target or target is None:
        for key in ("action", "from", "to", "reason", "command"):
            if entry.get(key) is not None:
                lines.append(f"{key}: {entry[key]}")
    return "\n".join(lines) + "\n"


def _ensure_registration(
    git: _Git, registry: Store, state: dict, tags: _Tags, version: str, result: dict
) -> str | None:
    """The commit of `{artifact}@v0.0.N`, creating the version's commit and tag when missing."""
    name = registration_tag(tags.artifact, version)
    if name in tags.names:
        commit = tags.tags[name][0] if name in tags.tags else git.commit_of(name)
        if name not in result["existing"]:
            result["existing"].append(name)
        return commit
    meta = base_meta() if version == BASE_ID else state["versions"].get(version)
    if meta is None:
        result["warnings"].append(f"git tags: {version} is not in the registry; no tag")
        return None
    source = meta.get("git_rev")
    base = (git.commit_of(source) if isinstance(source, str) and source else None) or (
        git.commit_of("HEAD")
    )
    if base is None:
        raise MirrorError("HEAD does not name a commit")
    what = meta.get("description") or f"adapter sha256 {meta.get('adapter_sha256')}"
    body = (
        f"cift registry {version}: {name}\n\n"
        f"A commit of its own for registry version {version} (GTO keeps one version per\n"
        f"commit); same tree as {base}.\n\n"
        f"registry id: {version}\n{what}\n"
    )
    tree = git.run("rev-parse", f"{base}^{{tree}}").strip()
    commit = git.run("commit-tree", tree, "-p", base, "-m", body).strip()
    message = f"cift registry: register {version} as {name}\n\nregistry id: {version}\n"
    for key in ("batch", "source", "adapter_sha256", "created"):
        if meta.get(key) is not None:
            message += f"{key}: {meta[key]}\n"
    if not _create_tag(git, name, commit, message, result):
        return git.commit_of(name)
    tags.add(name, commit, int(time.time()))
    return commit


def _stage_tag(
    git: _Git, tags: _Tags, stage: str, cancel: str, commit: str, message: str, result: dict
) -> None:
    """`{artifact}#{stage}#N` (assign) or `{artifact}#{stage}!#N` (unassign, cancel="!")."""
    prefix = f"{tags.artifact}#{stage}{cancel}"
    for _ in range(3):  # a writer outside our lock (gto itself) may take the counter first
        date, name = tags.stage_date(stage), f"{prefix}#{tags.counter()}"
        env = {"GIT_COMMITTER_DATE": f"{date} +0000"}
        if _create_tag(git, name, commit, message, result, env=env):
            tags.add(name, commit, date)
            return
        tags.load()
    result["warnings"].append(f"git tags: could not create a {prefix}#N tag")


def _create_tag(
    git: _Git, name: str, commit: str, message: str, result: dict, env: dict | None = None
) -> bool:
    """`git tag -a NAME -m MESSAGE COMMIT`; False when the name is taken (left alone)."""
    if git.ok("rev-parse", "--verify", "--quiet", f"refs/tags/{name}"):
        result["existing"].append(name)
        return False
    git.run("tag", "-a", name, "-m", message, commit, env=env)
    result["created"].append(name)
    return True


# ---------------------------------------------------------------------------------------------
# W&B


def wandb_folder(registry: Store, options: dict) -> Path:
    """`wandb_dir`, a relative one taken from the folder holding the registry folder."""
    folder = Path(options["wandb_dir"]).expanduser()
    return folder if folder.is_absolute() else registry.root.parent / folder


def mirror_wandb(registry: Store, state: dict, moves: dict[str, dict]) -> dict:
    """One short run logging each moved alias's version as an artifact with the alias."""
    options = mirror_options(state)
    result: dict[str, Any] = {"logged": [], "warnings": []}
    groups: dict[str, list[str]] = {}
    for alias in moves:
        target = state["aliases"].get(alias)
        if is_version_id(target):
            groups.setdefault(str(target), []).append(alias)
    if not groups:
        return result
    import wandb

    from cift.tracking import wandb_logged_in  # online when logged in, as every stage run

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    os.environ.setdefault("WANDB_SILENT", "true")  # as cift.tracking does
    folder = wandb_folder(registry, options)
    folder.mkdir(parents=True, exist_ok=True)
    result["mode"] = mode
    settings = wandb.Settings(
        silent=True,
        console="off",
        disable_code=True,
        x_disable_stats=True,
        x_disable_machine_info=True,
    )
    moved = {alias: state["aliases"].get(alias) for alias in moves}
    run = wandb.init(
        project=options["wandb_project"],
        job_type="registry",
        name="registry " + ", ".join(f"{a}->{v}" for a, v in moved.items()),
        dir=str(folder),
        mode=mode,
        config={"registry": str(registry.root), "moves": moved},
        reinit="create_new",
        settings=settings,
    )
    try:
        with tempfile.TemporaryDirectory(prefix="cift-wandb-") as tmp:
            for version, aliases in groups.items():
                artifact = _wandb_artifact(wandb, registry, state, options, version, Path(tmp))
                names = [*aliases, WANDB_VERSION_ALIAS.format(version=version)]
                run.log_artifact(artifact, aliases=names)
                result["logged"].append({"version": version, "aliases": names})
            result["run_id"] = run.id
            result["run_dir"] = str(Path(run.dir).parent) if run.dir else None
    finally:
        run.finish()
    return result


def _wandb_artifact(
    wandb: Any, registry: Store, state: dict, options: dict, version: str, tmp: Path
) -> Any:
    meta = base_meta() if version == BASE_ID else state["versions"].get(version)
    if meta is None:
        raise RegistryError(f"{version} is not in the registry")
    keep = ("parent", "batch", "created", "metrics", "adapter_sha256", "base_hash", "git_rev")
    metadata = {"registry_id": version, "registry": str(registry.root)}
    metadata |= {k: meta.get(k) for k in keep if meta.get(k) is not None}
    artifact = wandb.Artifact(
        name=options["wandb_artifact"],
        type="model",
        description=f"cift registry version {version}",
        metadata=json.loads(json.dumps(metadata, default=str)),
    )
    if version == BASE_ID:
        path = tmp / "base.json"
        path.write_text(json.dumps(meta, indent=2), encoding="utf-8")
        artifact.add_file(str(path), name="base.json")
    else:
        artifact.add_dir(str(registry.version_dir(version)))
    return artifact

"""The registry as every command uses it: the store, its mirrors and publishing.

`Registry(root)` is the store (`cift.registry.store.Store`: versions, aliases, rollback, history)
with the `mirrors` option, whose committed writes go to the enabled mirrors (git tags, W&B; see
`cift.registry.mirrors`), and `publish` (`cift.registry.publish.publish_run`). Mirrors run after
a write has been committed and the lock released, get the write's new history entries, and never
fail or roll back the registry: their reports land in `mirror_reports` and
`registry/mirrors.jsonl`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from cift.registry.mirrors import MIRROR_DEFAULTS, check_mirror_options, run_mirrors
from cift.registry.publish import publish_run
from cift.registry.store import LOCK_TIMEOUT_S, Store, now_iso


class Registry(Store):
    """A registry folder with mirrors and publishing (see the module docstring)."""

    OPTIONS: ClassVar[dict[str, Any]] = Store.OPTIONS | {"mirrors": MIRROR_DEFAULTS}

    def __init__(self, root: str | Path = "registry", *, lock_timeout: float = LOCK_TIMEOUT_S):
        super().__init__(root, lock_timeout=lock_timeout)
        self.mirror_reports: list[dict] = []  # one per mirrored write, oldest first

    def check_option(self, name: str, value: Any, current: Any) -> Any:
        """`mirrors`: a mapping merged into the current mirror options, every key validated."""
        if name == "mirrors":
            return check_mirror_options(value, current)
        return super().check_option(name, value, current)

    def set_mirrors(self, **mirrors: Any) -> dict:
        """Turn mirrors on or off (`git_tags=True`, `wandb=False`, `git_artifact="model"`, …);
        returns the resulting mirror options."""
        return self.set_options(mirrors=mirrors)["mirrors"]

    def after_commit(self, entries: list[dict], options: dict) -> None:
        mirrors = dict(options.get("mirrors") or {})
        if mirrors.get("git_tags") or mirrors.get("wandb"):
            self._mirror(entries)

    def _mirror(self, entries: list[dict]) -> dict | None:
        """Run the enabled mirrors for one committed write; never raises (see mirrors.py)."""
        try:
            report = run_mirrors(self, entries)
        except Exception as exc:  # a mirror must never fail a committed write
            report = {"ts": now_iso(), "warnings": [f"mirrors failed: {exc!r}"]}
        if report is not None:
            self.mirror_reports.append(report)
        return report

    def publish(
        self, run_dir: str | Path, batches: list[str] | None = None, command: str | None = None
    ) -> dict:
        """Register a DAG run's candidates (idempotent) and move `production` to its final
        deployed version; see `cift.registry.publish.publish_run`."""
        return publish_run(self, run_dir, batches=batches, command=command)

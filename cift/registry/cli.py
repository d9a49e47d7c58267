"""`cift registry list|show|promote|rollback|history|tag|publish|mirror` (argparse + printing).

Exit codes: 0 ok, 1 not found or refused (unknown version, empty rollback stack, invalid name),
2 usage (argparse). A mirror (git tags, W&B) that fails after a write prints a warning on stderr
and leaves the exit code alone: the registry write itself succeeded. `--registry DIR` on every
sub-command; by default `deploy.registry_dir` of the repository's params.yaml, else `registry/`.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from pathlib import Path
from typing import Any

from cift.cli_common import cell, table

DEFAULT_DIR = "registry"


def default_registry_dir() -> Path:
    """`deploy.registry_dir` from params.yaml (cwd, else the repo root), relative to its folder."""
    import yaml

    places = [Path.cwd() / "params.yaml"]
    try:
        from cift.config import repo_root

        places.append(repo_root() / "params.yaml")
    except FileNotFoundError:
        pass
    for path in places:
        try:
            params = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except (OSError, yaml.YAMLError):
            continue
        value = (params.get("deploy") or {}).get("registry_dir")
        if isinstance(value, str) and value:
            return path.parent / value
    return Path(DEFAULT_DIR)


def registry_from_args(args: argparse.Namespace) -> Any:
    from cift.registry import Registry

    registry = Registry(args.registry or default_registry_dir())
    args.registry_object = registry  # so `_guarded` can print its mirror warnings
    return registry


def _command(args: argparse.Namespace) -> str:
    """The command line as a user would have typed it (the history's `command`)."""
    words = ["cift", "registry", args.registry_command]
    for name in ("version", "alias", "run_dir"):
        if getattr(args, name, None) is not None:
            words.append(str(getattr(args, name)))
    if getattr(args, "to", None) is not None:
        words += ["--to", args.to]
    if getattr(args, "reason", None) is not None:
        words += ["--reason", args.reason]
    for batch in getattr(args, "batches", None) or []:
        words += ["--batch", batch]
    if args.registry:
        words += ["--registry", str(args.registry)]
    return shlex.join(words)


def headline(record: dict) -> str:
    """A one-cell summary of a version's metrics: accuracy on its own test split, or the first."""
    splits = (record.get("metrics") or {}).get("splits") or {}
    if not isinstance(splits, dict) or not splits:
        return "-"
    name = f"test/{record.get('batch')}"
    name = name if name in splits else next(iter(splits))
    row = splits[name] if isinstance(splits[name], dict) else {}
    acc, ci = row.get("accuracy"), row.get("accuracy_ci")
    if acc is None:
        return "-"
    text = f"{name} acc {acc:.3f}"
    if isinstance(ci, list) and len(ci) == 2:
        text += f" [{ci[0]:.2f},{ci[1]:.2f}]"
    return text


def cmd_list(args: argparse.Namespace) -> int:
    from cift.registry.store import summary

    records = registry_from_args(args).list()
    if args.json:
        print(json.dumps([summary(r) for r in records], ensure_ascii=False))
        return 0
    rows = [
        [
            r["version"],
            ",".join(r["aliases"]) or "-",
            cell(r.get("parent")),
            cell(r.get("batch")),
            cell(r.get("decision")),
            cell(r.get("created")),
            headline(r),
        ]
        for r in records
    ]
    header = ["VERSION", "ALIASES", "PARENT", "BATCH", "DECISION", "CREATED", "METRICS"]
    print(table(rows, header))
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    record = registry_from_args(args).show(args.version)
    if args.json:
        print(json.dumps(record, ensure_ascii=False))
        return 0
    for key, value in record.items():
        if isinstance(value, dict | list) and key != "aliases":
            value = json.dumps(value, ensure_ascii=False)
        elif key == "aliases":
            value = ",".join(value) or "-"
        print(f"{key:>15}  {cell(value)}")
    return 0


def _moved(before: dict, after: dict, alias: str, target: str) -> None:
    """Print every alias the command moved (production may carry proxy along)."""
    changed = [name for name in after if before.get(name) != after[name]]
    if not changed:
        print(f"{alias} already on {target}: nothing moved")
    for name in changed:
        print(f"{name}: {before.get(name) or '-'} -> {after[name]}")


def cmd_promote(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    before = registry.aliases()
    after = registry.promote(args.version, reason=args.reason, command=_command(args))
    _moved(before, registry.aliases(), "production", after)
    return 0


def cmd_rollback(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    before = registry.aliases()
    after = registry.rollback(to=args.to, reason=args.reason, command=_command(args))
    _moved(before, registry.aliases(), "production", after)
    return 0


def cmd_tag(args: argparse.Namespace) -> int:
    registry = registry_from_args(args)
    before = registry.aliases()
    after = registry.tag(args.version, args.alias, reason=args.reason, command=_command(args))
    _moved(before, registry.aliases(), args.alias, after)
    return 0


def cmd_history(args: argparse.Namespace) -> int:
    entries = registry_from_args(args).history()
    if args.alias:
        entries = [e for e in entries if e.get("alias") == args.alias]
    if args.last is not None:
        entries = entries[-args.last :] if args.last > 0 else []
    if args.json:
        print(json.dumps(entries, ensure_ascii=False))
        return 0
    rows = [
        [
            cell(e.get("ts")),
            cell(e.get("action")),
            cell(e.get("alias")),
            cell(e.get("from")),
            cell(e.get("to")),
            cell(e.get("reason")),
        ]
        for e in entries
    ]
    print(table(rows, ["TS", "ACTION", "ALIAS", "FROM", "TO", "REASON"]))
    return 0


def cmd_publish(args: argparse.Namespace) -> int:
    result = registry_from_args(args).publish(
        args.run_dir, batches=args.batches or None, command=_command(args)
    )
    print(json.dumps(result, ensure_ascii=False))
    return 0


ON_OFF = {"on": True, "off": False}


def cmd_mirror(args: argparse.Namespace) -> int:
    """Set the mirror options given (none: only print them); prints the result as JSON."""
    from cift.registry.mirrors import mirror_options

    registry = registry_from_args(args)
    changes: dict[str, Any] = {}
    if args.git_tags is not None:
        changes["git_tags"] = ON_OFF[args.git_tags]
    if args.wandb is not None:
        changes["wandb"] = ON_OFF[args.wandb]
    for key in ("git_artifact", "wandb_project", "wandb_artifact", "wandb_dir"):
        if getattr(args, key) is not None:
            changes[key] = getattr(args, key)
    options = registry.set_mirrors(**changes) if changes else mirror_options(registry.load())
    print(json.dumps(options, ensure_ascii=False))
    return 0


def _name(args: argparse.Namespace) -> str:
    """`cift registry promote`, `cift bank import`, …: how messages name the command."""
    group = "bank" if getattr(args, "bank_command", None) else "registry"
    return f"cift {group} {getattr(args, f'{group}_command')}"


def _mirror_warnings(args: argparse.Namespace) -> None:
    registry = getattr(args, "registry_object", None)
    for report in getattr(registry, "mirror_reports", None) or []:
        for warning in report.get("warnings") or []:
            print(f"{_name(args)}: warning: {warning}", file=sys.stderr)


def _guarded(func: Any) -> Any:
    """Registry refusals -> a message on stderr and exit 1; mirror warnings -> stderr."""

    def run(args: argparse.Namespace) -> int:
        from cift.registry.store import RegistryError

        try:
            return func(args)
        except RegistryError as exc:
            print(f"{_name(args)}: {exc}", file=sys.stderr)
            return 1
        finally:
            _mirror_warnings(args)

    return run


def command_adder(commands: Any) -> Any:
    """`command(name, func, help)`: a sub-command with `--registry DIR`, guarded."""

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help)
        p.add_argument(
            "--registry",
            metavar="DIR",
            default=None,
            help="registry folder (default: deploy.registry_dir of params.yaml, else registry/)",
        )
        p.set_defaults(func=_guarded(func))
        return p

    return command


def add_parser(sub: Any) -> argparse.ArgumentParser:
    """Register `cift registry …` on the top-level sub-parsers."""
    registry = sub.add_parser("registry", help="model registry: versions, aliases, rollback")
    command = command_adder(registry.add_subparsers(dest="registry_command", required=True))

    version_help = "a version id (v0003) or an alias (production, proxy, candidate, …)"
    p = command("list", cmd_list, "every version with its aliases")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")

    p = command("show", cmd_show, "one version's metadata")
    p.add_argument("version", help=version_help)
    p.add_argument("--json", action="store_true", help="JSON instead of text")

    p = command("promote", cmd_promote, "move production to VERSION")
    p.add_argument("version", help=version_help)
    p.add_argument("--reason", default=None, help="recorded in the history")

    p = command("rollback", cmd_rollback, "production back to its previous version")
    p.add_argument("--to", default=None, metavar="VERSION", help="roll back to this version")
    p.add_argument("--reason", default=None, help="recorded in the history")

    p = command("history", cmd_history, "every alias move, oldest first")
    p.add_argument("--json", action="store_true", help="a JSON array instead of a table")
    p.add_argument("--alias", default=None, help="only the moves of this alias")
    p.add_argument("--last", type=int, default=None, metavar="N", help="only the last N entries")

    p = command("tag", cmd_tag, "point ALIAS at VERSION")
    p.add_argument("version", help=version_help)
    p.add_argument("alias", help="production, proxy, candidate or your own name")
    p.add_argument("--reason", default=None, help="recorded in the history")

    p = command("publish", cmd_publish, "register a DAG run's versions, move production")
    p.add_argument("run_dir", help="runs/<experiment>")
    p.add_argument(
        "--batch",
        dest="batches",
        action="append",
        default=[],
        metavar="NAME",
        help="batch order (repeatable; default: params.yaml's data.batches, else by time)",
    )

    p = command("mirror", cmd_mirror, "turn the git-tag (GTO) and W&B mirrors on or off")
    p.add_argument(
        "--git-tags",
        choices=sorted(ON_OFF),
        default=None,
        help="annotated tags in GTO's format (model@v0.0.3, model#prod#4), never pushed",
    )
    p.add_argument(
        "--wandb", choices=sorted(ON_OFF), default=None, help="a W&B artifact alias per move"
    )
    p.add_argument("--git-artifact", default=None, metavar="NAME", help="GTO artifact name")
    p.add_argument("--wandb-project", default=None, metavar="NAME", help="W&B project")
    p.add_argument("--wandb-artifact", default=None, metavar="NAME", help="W&B artifact name")
    p.add_argument(
        "--wandb-dir", default=None, metavar="DIR", help="offline runs (relative: beside registry)"
    )
    return registry

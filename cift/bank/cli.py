"""`cift bank …`: the registry seen as an adapter bank."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any


def _spec(overrides: list[str]) -> Any:
    from hydra.utils import instantiate

    from cift.config import compose_config, load_params

    cfg = compose_config(overrides) if overrides else load_params()
    return instantiate(cfg.model)


def cmd_import(args: argparse.Namespace) -> int:
    from cift.bank.store import import_adapter
    from cift.registry.cli import _registry

    command = shlex.join(["cift", "bank", "import", args.path, "--name", args.name])
    version = import_adapter(_registry(args), args.path, args.name, _spec(args.overrides), command)
    print(json.dumps({"version": version, "alias": args.name, "source": "imported"}))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cift.bank.store import bank
    from cift.registry.cli import _headline, _registry, _s, _table
    from cift.registry.store import summary

    records = bank(_registry(args))
    if args.json:
        print(json.dumps([summary(r) | {"source": r["source"]} for r in records]))
        return 0
    rows = [
        [
            r["version"],
            ",".join(r["aliases"]) or "-",
            r["source"],
            _s(r.get("batch")),
            _s(r.get("created")),
            _headline(r),
        ]
        for r in records
    ]
    print(_table(rows, ["VERSION", "ALIASES", "SOURCE", "BATCH", "CREATED", "METRICS"]))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from cift.bank.select import kshot_examples, score_adapters, select_group
    from cift.bank.store import bank
    from cift.config import compose_config, load_params
    from cift.registry.cli import _registry

    cfg = compose_config(args.overrides) if args.overrides else load_params()
    weights = [float(w) for w in args.weights.split(",")]
    if len(weights) != 3:
        print(f"--weights {args.weights!r}: need three numbers a,b,c", file=sys.stderr)
        return 2
    adapters = {r["version"]: r["adapter_path"] for r in bank(_registry(args)) if r["adapter_path"]}
    if not adapters:
        print("cift bank select: the bank has no adapters yet", file=sys.stderr)
        return 1
    kshot = kshot_examples(args.kshot, args.k, cfg.seed)
    selected, scores = select_group(score_adapters(cfg, adapters, kshot), args.top, weights)
    print(
        json.dumps(
            {
                "selected": selected,
                "scores": scores,
                "weights": dict(zip(("accuracy", "gold_ppl", "diversity"), weights, strict=True)),
                "k": len(kshot),
            }
        )
    )
    return 0


def _guarded(func: Any) -> Any:
    def run(args: argparse.Namespace) -> int:
        from cift.registry.store import RegistryError

        try:
            return func(args)
        except RegistryError as exc:
            print(f"cift bank {args.bank_command}: {exc}", file=sys.stderr)
            return 1

    return run


def add_parser(sub: Any) -> None:
    from cift.cli import add_set_option

    bank = sub.add_parser("bank", help="the registry as an adapter bank: import, list, select")
    commands = bank.add_subparsers(dest="bank_command", required=True)

    def command(name: str, func: Any, help: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help)
        p.add_argument(
            "--registry",
            metavar="DIR",
            default=None,
            help="registry folder (default: deploy.registry_dir of params.yaml)",
        )
        p.set_defaults(func=_guarded(func))
        return p

    p = command("import", cmd_import, "register an external PEFT LoRA adapter (safetensors)")
    p.add_argument("path", help="adapter folder: adapter_config.json + adapter_model.safetensors")
    p.add_argument("--name", required=True, help="alias for the imported version")
    add_set_option(p)

    p = command("list", cmd_list, "every adapter with its source")
    p.add_argument("--json", action="store_true")

    p = command("select", cmd_select, "K-shot guided expert selection; last line JSON")
    p.add_argument("--kshot", required=True, help="JSONL of labelled examples of the task")
    p.add_argument(
        "--k", type=int, default=5, help="examples used (first k after a seeded shuffle)"
    )
    p.add_argument("--top", type=int, default=3, help="adapters chosen")
    p.add_argument(
        "--weights",
        default="1,1,0.5",
        help="a,b,c: accuracy, gold perplexity, diversity (λ); 1,0,0 = accuracy alone",
    )
    add_set_option(p)

"""`cift bank …`: the registry seen as an adapter bank."""

from __future__ import annotations

import argparse
import json
import shlex
import sys
from typing import Any


def _spec(overrides: list[str]) -> Any:
    from hydra.utils import instantiate

    from cift.config import run_config

    cfg = run_config(overrides)
    return instantiate(cfg.model)


def cmd_import(args: argparse.Namespace) -> int:
    from cift.bank.store import import_adapter
    from cift.registry.cli import registry_from_args

    command = shlex.join(["cift", "bank", "import", args.path, "--name", args.name])
    version = import_adapter(
        registry_from_args(args), args.path, args.name, _spec(args.overrides), command
    )
    print(json.dumps({"version": version, "alias": args.name, "source": "imported"}))
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    from cift.bank.store import bank
    from cift.cli_common import cell, table
    from cift.registry.cli import headline, registry_from_args
    from cift.registry.store import summary

    records = bank(registry_from_args(args))
    if args.json:
        print(json.dumps([summary(r) | {"source": r["source"]} for r in records]))
        return 0
    rows = [
        [
            r["version"],
            ",".join(r["aliases"]) or "-",
            r["source"],
            cell(r.get("batch")),
            cell(r.get("created")),
            headline(r),
        ]
        for r in records
    ]
    print(table(rows, ["VERSION", "ALIASES", "SOURCE", "BATCH", "CREATED", "METRICS"]))
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    from cift.bank.select import kshot_examples, score_adapters, select_group
    from cift.bank.store import bank
    from cift.config import run_config
    from cift.registry.cli import registry_from_args

    cfg = run_config(args.overrides)
    weights = [float(w) for w in args.weights.split(",")]
    if len(weights) != 3:
        print(f"--weights {args.weights!r}: need three numbers a,b,c", file=sys.stderr)
        return 2
    adapters = {
        r["version"]: r["adapter_path"] for r in bank(registry_from_args(args)) if r["adapter_path"]
    }
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


def cmd_moe(args: argparse.Namespace) -> int:
    import tempfile
    from pathlib import Path

    from hydra.utils import instantiate

    from cift.bank.moe import train_router
    from cift.bank.select import kshot_examples
    from cift.config import run_config
    from cift.models.moe import build_moe, expert_tensors, save_moe
    from cift.registry.cli import registry_from_args

    cfg = run_config(args.overrides)
    registry = registry_from_args(args)
    experts = [registry.show(name) for name in args.experts.split(",")]
    if any(e["adapter_path"] is None for e in experts):
        print("cift bank moe: the base (v0000) is not an expert", file=sys.stderr)
        return 2
    data = kshot_examples(args.kshot, args.k, cfg.seed)
    chosen = 0
    if args.pool:
        from cift.filters.base import FilterContext
        from cift.filters.pipeline import run_filter
        from cift.filters.simdiv import SimDivFilter
        from cift.io.jsonl import read_samples

        pool = read_samples(args.pool).accepted
        step = SimDivFilter(k=args.k, fraction=args.pool_fraction, kshot_file=args.kshot)
        kept = run_filter(pool, [step], FilterContext(seed=cfg.seed, n_in=len(pool)))[0]
        chosen, data = len(kept), data + kept
    loaded = instantiate(cfg.model).load(dtype="float32")
    tensors = [expert_tensors(e["adapter_path"]) for e in experts]
    build_moe(loaded.model, tensors, top_k=args.top_k, seed=cfg.seed)
    fit = train_router(
        loaded.model,
        loaded.tokenizer,
        data,
        cfg.system_prompt,
        epochs=args.epochs,
        lr=args.lr,
        train_experts=args.train_experts,
        max_length=int(cfg.train.max_length),
        seed=cfg.seed,
    )
    names = [e["version"] for e in experts]
    config = {
        "experts": names,
        "top_k": args.top_k,
        "train": fit,
        "kshot": len(data) - chosen,
        "pool_selected": chosen,
    }
    with tempfile.TemporaryDirectory(prefix=".moe-") as tmp:
        folder = save_moe(loaded.model, Path(tmp) / "moe", config, loaded.base_hash)
        version = registry.register(
            folder,
            {"source": "moe", "experts": names},
            command=shlex.join(["cift", "bank", "moe", args.experts]),
        )
    registry.tag(version, args.name, reason="mixture of experts")
    print(json.dumps({"version": version, "alias": args.name, **config}))
    return 0


def cmd_eval_moe(args: argparse.Namespace) -> int:
    from pathlib import Path

    from hydra.utils import instantiate

    from cift.bank.evaluate import bwt, routing_on, split_table
    from cift.config import run_config
    from cift.evaluate.build import build_evaluator, version_of
    from cift.io.jsonl import read_jsonl_trusted
    from cift.registry.cli import registry_from_args

    cfg = run_config(args.overrides)
    registry = registry_from_args(args)
    moe = registry.show(args.moe)
    experts = [registry.show(v) for v in moe["experts"]]
    batches = [b.name for b in cfg.data.batches]
    data = Path(cfg.paths.data) / "batches"
    splits = {
        b: read_jsonl_trusted(data / b / "test.jsonl")
        for b in batches
        if (data / b / "test.jsonl").is_file()
    }
    spec = instantiate(cfg.model)
    ev = build_evaluator(cfg)

    def hits(record: dict) -> tuple[dict, dict]:
        metrics, _ = ev.evaluate_version(
            version_of(record["version"], record["adapter_path"], spec), splits
        )
        per_case = {
            f"{b}/{r['id']}": bool(r["correct"])
            for b, m in metrics.items()
            for r in m["rows"]
            if r["correct"] is not None
        }
        return per_case, {b: m["accuracy"] for b, m in metrics.items()}

    expert_hits, moe_hits = {}, None
    for e in experts:
        expert_hits[e["version"]] = hits(e)[0]
    moe_hits, moe_row = hits(moe)
    result = {
        "moe": moe["version"],
        "experts": moe["experts"],
        "splits": split_table(expert_hits, moe_hits),
        "routing": routing_on(
            cfg, moe["adapter_path"], [s for rows in splits.values() for s in rows]
        ),
    }
    continual = Path(cfg.paths.reports) / "continual.json"
    if continual.is_file():
        R = json.loads(continual.read_text())["R"]
        diag = [R[i + 1][i] for i in range(len(batches))]
        moe_list = [moe_row.get(b) for b in batches]
        result["continual"] = {
            "moe_row": moe_list,
            "last_production_row": R[-1],
            "diagonal": diag,
            "bwt_moe": bwt(moe_list, diag),
            "bwt_last_production": bwt(R[-1], diag),
        }
    print(json.dumps(result))
    return 0


def add_parser(sub: Any) -> None:
    from cift.cli_common import add_set_option
    from cift.registry.cli import command_adder

    bank = sub.add_parser("bank", help="the registry as an adapter bank: import, list, select")
    command = command_adder(bank.add_subparsers(dest="bank_command", required=True))

    p = command("import", cmd_import, "register an external PEFT LoRA adapter (safetensors)")
    p.add_argument("path", help="adapter folder: adapter_config.json + adapter_model.safetensors")
    p.add_argument("--name", required=True, help="alias for the imported version")
    add_set_option(p)

    p = command("moe", cmd_moe, "a mixture of LoRA experts over bank adapters, router fitted")
    p.add_argument("--experts", required=True, help="comma-separated versions or aliases")
    p.add_argument("--kshot", required=True, help="JSONL of labelled examples (router data)")
    p.add_argument("--k", type=int, default=8, help="K-shot examples used")
    p.add_argument("--pool", help="candidate JSONL: Sim-Div picks more router data from it")
    p.add_argument("--pool-fraction", type=float, default=0.33)
    p.add_argument("--top-k", type=int, default=2, help="experts mixed per token")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=5e-3)
    p.add_argument("--train-experts", action="store_true", help="fit the experts' LoRA too")
    p.add_argument("--name", required=True, help="alias of the new version")
    add_set_option(p)

    p = command("eval-moe", cmd_eval_moe, "MoE vs its experts on every batch's test split")
    p.add_argument("moe", help="the MoE version or alias")
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

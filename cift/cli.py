"""`cift …`: thin sub-commands over the library (no logic of their own)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from cift.cli_common import add_set_option


def cmd_compose(args: argparse.Namespace) -> int:
    from cift.config import check_params, compose_params

    overrides = all_overrides(args)
    try:
        if args.check:
            diff = check_params(overrides)
            if diff:
                print(diff, end="")
                print("params.yaml differs from conf/: run `cift compose` and commit it")
                return 1
            print("params.yaml matches conf/")
            return 0
        print(f"wrote {compose_params(overrides)}")
        return 0
    except Exception as exc:  # a composition error: report it, exit 2 (not a difference)
        print(f"composition failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2


def cmd_data_check(args: argparse.Namespace) -> int:
    from cift.data.check import check_file

    summary = check_file(args.file, fmt=args.format)
    for r in summary["rejects"]:
        print(f"{args.file}:{r['line']}: {r['field'] or '(line)'}: {r['reason']}", file=sys.stderr)
    print(json.dumps(summary, ensure_ascii=False))
    return 1 if args.strict and summary["rejected"] else 0


def cmd_data_import(args: argparse.Namespace) -> int:
    from cift.config import compose_params, repo_root
    from cift.data.batches_config import active_data_config, append_batch
    from cift.data.check import import_file
    from cift.io.jsonl import StrictInputError

    root = repo_root()
    dst = Path("data") / "imported" / f"{args.batch}.jsonl"
    config = active_data_config(root)
    try:
        summary = import_file(args.file, root / dst, fmt=args.format, strict=args.strict)
    except StrictInputError as exc:
        print(exc, file=sys.stderr)
        return 1
    entry = append_batch(config, args.batch, str(dst))
    compose_params(args.overrides, root)
    print(
        f"added batch {entry} to {config.relative_to(root)}; params.yaml re-composed",
        file=sys.stderr,
    )
    print(json.dumps(summary, ensure_ascii=False))
    return 0


def cmd_data_export(args: argparse.Namespace) -> int:
    from cift.data.check import export_file

    print(json.dumps(export_file(args.file, args.out, fmt=args.format), ensure_ascii=False))
    return 0


def cmd_data_export_dpo(args: argparse.Namespace) -> int:
    from cift.config import run_config
    from cift.data.dpo import deployed_preference, preference_pairs
    from cift.io.jsonl import read_jsonl_trusted, write_jsonl_atomic

    cfg = run_config(args.overrides)
    folder = Path(cfg.paths.runs) / cfg.experiment_name / args.batch
    if not (folder / "rejected.jsonl").is_file():
        print(
            f"{folder / 'rejected.jsonl'}: not found; run `dvc repro filter` first", file=sys.stderr
        )
        return 1
    pairs, counts = preference_pairs(
        read_jsonl_trusted(folder / "rejected.jsonl"),
        read_jsonl_trusted(folder / "selected.jsonl"),
        cfg.system_prompt,
        deployed_preference(cfg, args.batch) if args.deployed else None,
    )
    out = Path(args.out or folder / "dpo.jsonl")
    write_jsonl_atomic(out, pairs)
    print(json.dumps({"out": str(out), **counts}))
    return 0


BENCHES = {
    "ifd": "cift.bench.ifd",
    "diversity": "cift.bench.diversity",
    "train": "cift.bench.train",
    "serve": "cift.bench.serve",
}


def cmd_bench(args: argparse.Namespace) -> int:
    """Each benchmark module owns its flags: `cift bench NAME --help` shows them."""
    import importlib

    return importlib.import_module(BENCHES[args.name]).main(args.args)


def cmd_score_ifd(args: argparse.Namespace) -> int:
    from cift.scoring.commands import score_ifd_command

    return score_ifd_command(args.in_path, args.out_path, all_overrides(args))


def cmd_eval_file(args: argparse.Namespace) -> int:
    from cift.config import compose_config
    from cift.deploy.resolve import UnknownModel
    from cift.evaluate.eval_file import eval_file

    cfg = compose_config(args.overrides)
    try:
        result = eval_file(
            cfg,
            args.path,
            args.text_field,
            args.label_field,
            model=args.model,
            limit=args.limit,
            registry=args.registry,
        )
    except UnknownModel as exc:
        print(exc, file=sys.stderr)
        return 1
    for message in result.pop("rejects"):
        print(message, file=sys.stderr)
    rows = result.pop("rows")
    if args.predictions:
        from cift.io.jsonl import write_jsonl_atomic

        write_jsonl_atomic(args.predictions, rows)
    print(json.dumps(result, ensure_ascii=False))
    return 0


def cmd_curve(args: argparse.Namespace) -> int:
    from cift.config import run_config
    from cift.evaluate.curve import learning_curve

    sizes = [int(x) for x in args.sizes.split(",") if x.strip()]
    rows = learning_curve(run_config(args.overrides), sizes)
    for row in rows:
        acc, ranked = row["accuracy_ci"], row["ranked_accuracy_ci"]
        print(
            f"n={row['n']:>4}  steps={row['optimizer_steps']:>4}  tokens={row['train_tokens']:>7}  "
            f"accuracy {row['accuracy']:.3f} [{acc[0]:.3f}, {acc[1]:.3f}]  "
            f"ranked {row['ranked_accuracy']:.3f} [{ranked[0]:.3f}, {ranked[1]:.3f}]  "
            f"fault rate {row['fault_rate']:.2f}",
            file=sys.stderr,
        )
    print(json.dumps(rows))
    return 0


def cmd_judge_calibrate(args: argparse.Namespace) -> int:
    from cift.config import run_config
    from cift.evaluate.build import build_judge
    from cift.evaluate.calibrate import SUMMARY_KEYS, judge_calibration
    from cift.evaluate.judge import JudgeError
    from cift.models.openai_chat import TeacherUnavailable

    cfg = run_config(args.overrides)
    judge = build_judge(cfg)
    if judge is None:
        print(
            "judge=none: nothing to calibrate (pick -S judge=local or judge=openai)",
            file=sys.stderr,
        )
        return 1
    try:
        result = judge_calibration(cfg, judge, refresh=args.refresh)
    except (JudgeError, TeacherUnavailable) as exc:  # the endpoint and its HTTP status
        print(exc, file=sys.stderr)
        return 1
    detail = {k: v for k, v in result.items() if k not in SUMMARY_KEYS}
    print(json.dumps(detail), file=sys.stderr)
    print(json.dumps({k: result[k] for k in SUMMARY_KEYS}))
    return 0


def cmd_export_merged(args: argparse.Namespace) -> int:
    from cift.config import compose_config
    from cift.deploy.export import export_merged
    from cift.deploy.resolve import UnknownModel

    try:
        cfg = compose_config(args.overrides)
        result = export_merged(cfg, args.version, args.dir, args.dtype, registry=args.registry)
    except (UnknownModel, FileExistsError) as exc:
        print(exc, file=sys.stderr)
        return 1
    print(json.dumps(result))
    return 0


def add_overrides(p: argparse.ArgumentParser, example: str) -> None:
    """-S like every command, plus the positional overrides these commands always took."""
    p.add_argument("positional", nargs="*", metavar="OVERRIDE", help=f"same as -S, e.g. {example}")
    add_set_option(p)


def all_overrides(args: argparse.Namespace) -> list[str]:
    return [*getattr(args, "positional", []), *args.overrides]


def cmd_report(args: argparse.Namespace) -> int:
    from cift.config import load_params, repo_root
    from cift.io.jsonl import write_json_atomic
    from cift.report import exps
    from cift.report.build import write_page, write_reports

    cfg = load_params()
    reports = Path(cfg.paths.reports)
    if args.exps:
        root = repo_root()
        rows = exps.rows_from_dvc(exps.dvc_exp_show(root), exps.git_reader(root))
        rows += exps.rows_from_hydra(exps.hydra_job_folders(root))
        write_json_atomic(reports / "ablations.json", exps.merge(rows))
        print(f"{len(rows)} experiments → {reports / 'ablations.json'}", file=sys.stderr)
    if args.page_only:
        page = write_page(reports)
    else:
        write_reports(cfg)
        page = reports / "report.html"
    if args.wandb:
        from cift.report.wandb_report import build_report

        entity, _, project = args.wandb.partition("/")
        if not entity or not project:
            print(f"--wandb {args.wandb!r}: expected ENTITY/PROJECT", file=sys.stderr)
            return 2
        ablations = reports / "ablations.json"
        data = json.loads(ablations.read_text()) if ablations.is_file() else None
        report = build_report(entity, project, data)
        try:
            report.save()
        except Exception as exc:  # offline or not logged in: the page above still exists
            print(
                f"W&B report not saved ({type(exc).__name__}: {exc}); run `wandb login` "
                "and sync the offline runs first",
                file=sys.stderr,
            )
            return 1
        print(f"W&B report: {report.url}", file=sys.stderr)
    print(json.dumps({"page": str(page)}))
    return 0


def cmd_quality_report(args: argparse.Namespace) -> int:
    from cift.config import run_config
    from cift.data.quality import quality_parts, quality_report, write_quality_page
    from cift.io.jsonl import read_jsonl_trusted, read_samples

    cfg = run_config(args.overrides)
    read = read_samples(args.file)
    for r in read.rejects:
        print(f"{args.file}:{r.line}: {r.field or '(line)'}: {r.reason}", file=sys.stderr)
    records = read_jsonl_trusted(args.records) if args.records else []
    count, embed, grade = quality_parts(cfg, records)
    report = quality_report(read.accepted, count, embed, grade, float(cfg.quality.threshold))
    if args.out:
        prompts = count([s["instruction"] for s in read.accepted])
        write_quality_page(args.out, Path(args.file).name, report, prompts)
    print(json.dumps(report))
    return 0


RUN_HELP = """usage: cift run [--target STAGE]... [--data DIR] [HYDRA ARGS...]

The DVC stages in DAG order, in-process, as a Hydra app: `cift run -m experiment=a,b` runs one
job per experiment, each in its own Hydra folder with params.yaml, data/, runs/ and reports/.
  --target STAGE  run only STAGE and what it needs (repeatable; DVC's names, e.g. continual)
  --data DIR      reuse DIR's generated data: stages whose outputs exist there are skipped
"""


def cmd_run(argv: list[str]) -> int:
    from cift.config import repo_root
    from cift.run import hydra_main

    if argv[:1] in (["-h"], ["--help"]):
        print(RUN_HELP, end="")
        return 0
    targets, data, rest = [], None, []
    it = iter(argv)
    for arg in it:
        if arg in ("--target", "--data"):
            value = next(it, None)
            if value is None:
                print(f"cift run: {arg} needs a value", file=sys.stderr)
                return 2
            if arg == "--target":
                targets.append(value)
            else:
                data = Path(value)
        else:
            rest.append(arg)
    hydra_main(repo_root(), targets or None, data, rest)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cift", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("compose", help="compose conf/ into params.yaml (or --check it)")
    add_overrides(p, "profile=tiny")
    p.add_argument("--check", action="store_true", help="exit 1 when params.yaml differs")
    p.set_defaults(func=cmd_compose)

    data = sub.add_parser("data", help="check, import and export sample files").add_subparsers(
        dest="data_command", required=True
    )
    p = data.add_parser("check", help="read a JSONL file with the sample reader; report rejects")
    p.add_argument("file")
    p.add_argument("--format", default="alpaca", choices=["alpaca", "sharegpt", "auto"])
    p.add_argument("--strict", action="store_true", help="exit 1 when any line is rejected")
    p.set_defaults(func=cmd_data_check)

    p = data.add_parser("import", help="redact a file into data/imported/ and add it as a batch")
    p.add_argument("file")
    p.add_argument("--batch", required=True, help="name of the new batch")
    p.add_argument("--format", default="alpaca", choices=["alpaca", "sharegpt", "auto"])
    p.add_argument("--strict", action="store_true", help="fail, writing nothing, on any reject")
    add_set_option(
        p, "Hydra override to re-compose params.yaml with (repeatable), as for dvc exp run"
    )
    p.set_defaults(func=cmd_data_import)

    p = data.add_parser("export", help="convert samples to alpaca / sharegpt / messages JSONL")
    p.add_argument("file")
    p.add_argument("--out", required=True)
    p.add_argument("--format", default="sharegpt", choices=["alpaca", "sharegpt", "messages"])
    p.set_defaults(func=cmd_data_export)

    p = data.add_parser(
        "export-dpo",
        help="preference pairs (TRL DPO format) from a batch's filtered-out valid samples",
    )
    p.add_argument("batch", help="batch name, e.g. b1")
    p.add_argument("--out", help="JSONL (default runs/<exp>/<batch>/dpo.jsonl)")
    p.add_argument(
        "--deployed",
        action="store_true",
        help="for samples with no selected alternative, the deployed model's answer "
        "when the judge prefers it in both orders",
    )
    add_set_option(p)
    p.set_defaults(func=cmd_data_export_dpo)

    score = sub.add_parser("score", help="score a sample file").add_subparsers(
        dest="score_command", required=True
    )
    p = score.add_parser("ifd", help="IFD = PPL(y|x) / PPL(y) on the proxy model, per sample")
    p.add_argument("--in", dest="in_path", required=True, help="Alpaca or ShareGPT JSONL")
    p.add_argument("--out", dest="out_path", required=True, help="scores JSONL, input order")
    add_overrides(p, "filter.ifd.template=raw")
    p.set_defaults(func=cmd_score_ifd)

    p = sub.add_parser("eval-file", help="diagnosis accuracy of a model on labelled free text")
    p.add_argument("path", help="JSONL, one case per line")
    p.add_argument("--text-field", required=True, help="field holding the case text")
    p.add_argument("--label-field", required=True, help="field holding the gold diagnosis")
    p.add_argument(
        "--model", default="production", help="alias | vNNNN | base | EXP/BATCH | ADAPTER_DIR"
    )
    p.add_argument("--limit", type=int, default=None, help="score the first N usable cases")
    p.add_argument("--registry", help="registry folder (default: deploy.registry_dir)")
    p.add_argument("--predictions", help="also write per-case predictions to this JSONL")
    add_set_option(p)
    p.set_defaults(func=cmd_eval_file)

    p = sub.add_parser(
        "curve",
        help="the full arm's learning curve on Table 1's test set (after dvc repro); JSON last",
    )
    p.add_argument(
        "--sizes", required=True, help="comma-separated sample counts of batch 1, e.g. 30,60,120"
    )
    add_set_option(p)
    p.set_defaults(func=cmd_curve)

    judge = sub.add_parser("judge", help="the configured judge").add_subparsers(
        dest="judge_command", required=True
    )
    p = judge.add_parser(
        "calibrate",
        help="accuracy on planted pairs from the KB (both orders); cached; last line JSON",
    )
    p.add_argument("--refresh", action="store_true", help="measure again, ignoring the cache")
    add_set_option(p)
    p.set_defaults(func=cmd_judge_calibrate)

    export = sub.add_parser("export", help="export a version").add_subparsers(
        dest="export_command", required=True
    )
    p = export.add_parser("merged", help="adapter merged into the base, as a transformers folder")
    p.add_argument("version", help="alias | vNNNN | base | EXP/BATCH | ADAPTER_DIR")
    p.add_argument("--registry", help="registry folder (default: deploy.registry_dir)")
    p.add_argument("dir", help="output folder (must not exist or be empty)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    add_set_option(p)
    p.set_defaults(func=cmd_export_merged)

    from cift.registry.cli import add_parser as add_registry_parser

    add_registry_parser(sub)

    from cift.bank.cli import add_parser as add_bank_parser
    from cift.serve.cli import add_parser as add_serve_parser

    add_bank_parser(sub)

    add_serve_parser(sub)

    quality = sub.add_parser("quality", help="dataset quality").add_subparsers(
        dest="quality_command", required=True
    )
    p = quality.add_parser("report", help="Dial-insight metrics of a sample file; last line JSON")
    p.add_argument("file", help="Alpaca JSONL (meta.condition enables label_quality)")
    p.add_argument("--records", help="the records JSONL the samples came from (faithfulness)")
    p.add_argument("--out", help="also write quality.json, quality.png and quality.html here")
    add_set_option(p)
    p.set_defaults(func=cmd_quality_report)

    p = sub.add_parser("report", help="reports/ from the run folders: JSON, figures, HTML page")
    p.add_argument(
        "--exps",
        action="store_true",
        help="first merge queued DVC experiments and cift run folders into reports/ablations.json",
    )
    p.add_argument("--wandb", metavar="ENTITY/PROJECT", help="also save a W&B Report")
    p.add_argument(
        "--page-only",
        action="store_true",
        help="only re-render report.html from the files already in reports/",
    )
    p.set_defaults(func=cmd_report)
    sub.add_parser("run", help="the DAG in-process as a Hydra app (-m for sweeps); --help")

    p = sub.add_parser("bench", help="engine vs reference, same run; last line is JSON")
    p.add_argument("name", choices=sorted(BENCHES))
    p.add_argument("args", nargs=argparse.REMAINDER, help="the benchmark's own flags")
    p.set_defaults(func=cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["run"]:  # Hydra parses its own arguments (-m, overrides, --cfg ...)
        sys.exit(cmd_run(argv[1:]))
    args = build_parser().parse_args(argv)
    sys.exit(args.func(args))


if __name__ == "__main__":
    main()

"""The model card written beside every registered version (`versions/vNNNN/model_card.md`).

It says what data the adapter saw, which filter chose it, how it scored (with intervals), and what
it is and is not for. It is rendered from the version's metadata only, so any field may be absent.
"""

from __future__ import annotations

from typing import Any

INTENDED_USE = """\
Research on continual instruction fine-tuning: studying how a small domain model learns from
batches of data that keep arriving (filtering, forgetting, promotion and rollback). Outputs are
drafts for people who can judge them."""

LIMITS = """\
- **Not a medical device.** It has not been validated clinically and must not be used to
  diagnose, treat or advise real patients, or in place of a qualified professional.
- The training data is synthetic (records generated from a small knowledge base, reasoning
  written by a teacher model) or imported by the operator; it can be wrong, incomplete or biased,
  and the model can state wrong things fluently.
- Metrics come from small held-out sets drawn from the same generator as the training data; the
  intervals are wide, and scores on real cases will be lower.
- It is a LoRA adapter: it only works on the exact base model whose hash is recorded above."""


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _interval(value: Any, ci: Any) -> str:
    if value is None:
        return "–"
    if (
        isinstance(ci, list | tuple)
        and len(ci) == 2
        and all(isinstance(x, int | float) for x in ci)
    ):
        return f"{_fmt(value)} [{_fmt(ci[0])}, {_fmt(ci[1])}]"
    return _fmt(value)


def _data_section(meta: dict) -> list[str]:
    train = meta.get("train") or {}
    batch = meta.get("batch")
    lines = ["## Data", ""]
    if batch is None and not train:
        return [*lines, "No training summary was recorded for this version.", ""]
    n, replay = train.get("n", meta.get("n_samples")), train.get("replay")
    text = f"Fine-tuned on batch `{_fmt(batch)}`"
    if n is not None:
        text += f": {n} selected domain samples"
        if replay is not None:
            text += f" mixed with {replay} general replay samples (against forgetting)"
    lines += [text + ".", ""]
    rows = [
        ("initialised from", train.get("init")),
        ("training tokens", train.get("train_tokens")),
        ("optimizer steps", train.get("optimizer_steps")),
        ("final loss", train.get("final_loss")),
    ]
    rows = [(k, v) for k, v in rows if v is not None]
    if rows:
        lines += ["| | |", "|---|---|", *(f"| {k} | {_fmt(v)} |" for k, v in rows), ""]
    return lines


def _filter_section(meta: dict) -> list[str]:
    flt = meta.get("filter")
    lines = ["## Filter", ""]
    if not isinstance(flt, dict) or not flt:
        return [*lines, "No filter summary was recorded.", ""]
    name = flt.get("name", "?")
    text = f"Filter `{_fmt(name)}`"
    if flt.get("n_in") is not None:
        text += f": {flt.get('n_in')} generated samples in, {_fmt(flt.get('kept'))} kept"
    if flt.get("proxy"):
        text += f", scored with the proxy `{_fmt(flt.get('proxy'))}`"
    lines += [text + ".", ""]
    steps = flt.get("steps") or {}
    if isinstance(steps, dict) and steps:
        lines += ["| step | dropped |", "|---|---|"]
        lines += [f"| {_fmt(step)} | {_fmt(dropped)} |" for step, dropped in steps.items()]
        lines.append("")
    return lines


def _metrics_section(meta: dict) -> list[str]:
    metrics = meta.get("metrics") or {}
    lines = ["## Metrics", ""]
    splits = metrics.get("splits") if isinstance(metrics, dict) else None
    if not metrics:
        return [*lines, "No evaluation was recorded for this version.", ""]
    if isinstance(splits, dict) and splits:
        lines += [
            "Accuracy with its 95% bootstrap interval, per evaluation split:",
            "",
            "| split | n | accuracy [95% CI] | BLEU | ROUGE-L | safety violations |",
            "|---|---|---|---|---|---|",
        ]
        for split, row in splits.items():
            row = row if isinstance(row, dict) else {}
            lines.append(
                f"| {_fmt(split)} | {_fmt(row.get('n'))} "
                f"| {_interval(row.get('accuracy'), row.get('accuracy_ci'))} "
                f"| {_fmt(row.get('bleu'))} | {_fmt(row.get('rouge_l'))} "
                f"| {_fmt(row.get('safety_violations'))} |"
            )
        lines.append("")
    judge = metrics.get("judge")
    if isinstance(judge, dict) and judge:
        text = (
            "Pairwise judge against the deployed model: win rate "
            f"{_interval(judge.get('win_rate'), judge.get('win_rate_ci'))}"
        )
        if judge.get("consistency") is not None:
            text += f", position consistency {_fmt(judge.get('consistency'))}"
        if judge.get("inconclusive"):
            text += " (inconclusive)"
        lines += [text + ".", ""]
    gate = metrics.get("gate")
    if isinstance(gate, dict) and gate:
        verdict = "promoted" if gate.get("promote") else "not promoted"
        reasons = gate.get("reasons") or []
        text = f"Promotion gate: {verdict}"
        if reasons:
            text += " — " + "; ".join(_fmt(r) for r in reasons)
        lines += [text + ".", ""]
    other = {k: v for k, v in metrics.items() if k not in ("splits", "judge", "gate")}
    if other:
        lines += ["| metric | value |", "|---|---|"]
        lines += [f"| {_fmt(k)} | {_fmt(v)} |" for k, v in other.items()]
        lines.append("")
    return lines


def render_card(meta: dict) -> str:
    """Markdown for one version's metadata (as stored in registry.json / meta.json)."""
    version = meta.get("version", "?")
    rows = [
        ("version", version),
        ("parent", meta.get("parent")),
        ("batch", meta.get("batch")),
        ("run-local name", meta.get("source")),
        ("decision", meta.get("decision")),
        ("created (UTC)", meta.get("created")),
        ("base model hash", meta.get("base_hash")),
        ("adapter sha256", meta.get("adapter_sha256")),
        ("git revision", meta.get("git_rev")),
        ("DVC state", meta.get("dvc_rev")),
    ]
    lines = [
        f"# Model card: {version}",
        "",
        "A LoRA adapter registered by cift (continual instruction fine-tuning).",
        "",
        "| field | value |",
        "|---|---|",
        *(f"| {k} | {_fmt(v)} |" for k, v in rows),
        "",
        *_data_section(meta),
        *_filter_section(meta),
        *_metrics_section(meta),
        "## Intended use",
        "",
        INTENDED_USE,
        "",
        "## Limitations",
        "",
        LIMITS,
        "",
    ]
    return "\n".join(lines)

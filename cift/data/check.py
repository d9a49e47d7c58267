"""Check, import and export sample files (the bodies of `cift data check|import|export`).

Import is the door for user data: every line goes through the one reader (rejects kept beside the
output, never dropped), accepted samples are PII-redacted and tagged `source: imported`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

from cift.data.formats import export_samples
from cift.data.redact import redact_sample
from cift.io.jsonl import read_samples, write_jsonl_atomic, write_rejects


def rejects_path(dst: str | Path) -> Path:
    """Where the rejects of an output file go: data/x.jsonl -> data/x.rejects.jsonl."""
    return Path(dst).with_suffix(".rejects.jsonl")


def check_file(path: str | Path, fmt: str = "alpaca", strict: bool = False) -> dict[str, Any]:
    """Read `path` without writing anything; returns ReadResult.summary().

    strict: raise StrictInputError if any line is rejected.
    """
    return read_samples(path, fmt=fmt, strict=strict).summary()


def import_file(
    src: str | Path, dst: str | Path, fmt: str = "alpaca", strict: bool = False
) -> dict[str, Any]:
    """Read `src` (alpaca | sharegpt | auto), redact PII, write samples to `dst`, rejects beside.

    Returns the read summary plus "output", "rejects_file" and "redaction" ({kind: count}).
    With strict, raises StrictInputError before anything is written.
    """
    result = read_samples(src, fmt=fmt, strict=strict)
    samples, totals = [], Counter()
    for sample in result.accepted:
        clean, changes = redact_sample(sample)
        clean["meta"].setdefault("source", "imported")
        for change in changes:
            totals[change["kind"]] += change["count"]
        samples.append(clean)
    write_jsonl_atomic(dst, samples)
    write_rejects(rejects_path(dst), result.rejects)
    summary = result.summary()
    summary.update(output=str(dst), rejects_file=str(rejects_path(dst)), redaction=dict(totals))
    return summary


def export_file(
    src: str | Path, dst: str | Path, fmt: str = "sharegpt", strict: bool = False
) -> dict[str, Any]:
    """Convert a cift sample file to `fmt` (alpaca | sharegpt | messages) at `dst`.

    `src` is read with the same rules as any input; rejects are written beside `dst`.
    """
    result = read_samples(src, fmt="alpaca", strict=strict)
    rows = export_samples(result.accepted, fmt)
    write_jsonl_atomic(dst, rows)
    write_rejects(rejects_path(dst), result.rejects)
    summary = result.summary()
    summary.update(output=str(dst), rejects_file=str(rejects_path(dst)), format=fmt)
    return summary

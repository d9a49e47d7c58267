"""What every `cift …` command line shares: the `-S` override option and plain-text tables.

The top-level CLI (`cift.cli`) and the sub-CLIs (`cift.registry.cli`, `cift.bank.cli`,
`cift.serve.cli`, benchmarks) import these from here, never from each other, so `cift.cli` can
register the sub-CLIs without an import cycle.
"""

from __future__ import annotations

import argparse
from typing import Any


def add_set_option(p: argparse.ArgumentParser, help: str | None = None) -> None:
    """`-S/--set OVERRIDE` (repeatable) into `args.overrides`: Hydra overrides of the config."""
    p.add_argument(
        "-S",
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="OVERRIDE",
        help=help or "Hydra override (repeatable), e.g. -S profile=tiny",
    )


def table(rows: list[list[str]], header: list[str]) -> str:
    """Left-aligned columns two spaces apart, the header first; trailing spaces cut."""
    cells = [header, *rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def cell(value: Any) -> str:
    """A table cell: "-" for nothing (None or an empty list), else the value as text."""
    return "-" if value is None or value == [] else str(value)

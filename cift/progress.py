"""Progress bars for the loops that take more than a few seconds (scoring, embedding, gradients,
generation, judging): drawn on a terminal only, so DVC logs, CI and pipes stay quiet."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any, TypeVar

T = TypeVar("T")


def progress(
    iterable: Iterable[T] | None = None,
    *,
    desc: str,
    total: int | None = None,
    unit: str = "it",
) -> Iterator[T] | Any:
    """tqdm on stderr, disabled when stderr is not a terminal (`disable=None`); TQDM_DISABLE=1
    turns it off everywhere. Without `iterable`, a bar to `.update(n)` by hand (a context
    manager)."""
    from tqdm import tqdm

    return tqdm(
        iterable, desc=desc, total=total, unit=unit, leave=False, disable=None, dynamic_ncols=True
    )

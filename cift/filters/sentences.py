"""Sentence splitting for the length and diversity filters (English and Chinese).

A generated answer is numbered steps, then `Diagnosis: …`, then `Advice: …`. Each line is at least
one sentence (a step or a label line needs no final punctuation); inside a line, sentences end
at `.` `!` `?` followed by white space, or at `。` `！` `？` `；`. A period does not end a sentence
in a decimal ("38.5"), after a known abbreviation ("e.g.", "Dr.", "vs.") or a step number ("2.").
"""

from __future__ import annotations

import re

# A list marker opening a line: "1. ", "2) ", "3、", "(4) ", "（5）", "- ", "* ", "• ", "## ".
_LINE_MARKER = re.compile(
    r"^\s*(?:\d{1,3}(?:[.)](?!\d)|、)|[(（]\d{1,3}[)）]|[a-z]\)(?=\s)|[-*•·](?=\s)|#{1,6}(?=\s))\s*"
)
# A step number inside a line, right after a sentence end or a colon: "Plan: 1. Rest. 2. Fluids."
_INLINE_MARKER = re.compile(
    r"(?:(?<=[.!?:;])|(?<=[.!?:;][\"'”’)])|(?<=[。！？；：]))\s*\d{1,3}(?:[.)](?!\d)|、)\s*"
)
# A candidate sentence end: Latin terminators then closing quotes/brackets then white space (or
# the end of the line); Chinese terminators need no space.
_END = re.compile(r"[.!?]+[\"'”’)\]]*(?=\s|$)|[。！？；]+[\"'”’）)」』]*")
_ABBREVIATIONS = frozenset(
    {"dr", "mr", "mrs", "ms", "prof", "st", "vs", "cf", "approx", "ca", "jr", "sr", "inc", "ltd"}
)
_BEFORE_NUMBER = frozenset({"no", "fig", "vol", "p", "pp", "ref"})  # "No. 5", "Fig. 2"
_DOTTED = re.compile(r"^(?:[A-Za-z]\.)+[A-Za-z]$")  # e.g, i.e, a.m, U.S (before the last dot)
_TERMINAL = re.compile(r"[.!?:;。！？；：\"'”’)）]$")


def _is_abbreviation(line: str, end: int, rest: str) -> bool:
    """Whether the single "." at line[end - 1] closes an abbreviation, not a sentence."""
    word = re.split(r"\s", line[: end - 1])[-1].lstrip("([\"'“‘").lower()
    if word in _ABBREVIATIONS or _DOTTED.match(word):
        return True
    nxt = rest.lstrip()[:1]
    if word in _BEFORE_NUMBER:
        return nxt.isdigit()
    return word == "etc" and nxt.islower()  # "fever, cough, etc. and" continues


def _split_line(line: str) -> list[str]:
    pieces: list[str] = []
    begin = 0
    for m in _END.finditer(line):
        single_dot = m.group().rstrip("\"'”’)]") == "."
        if single_dot and _is_abbreviation(line, m.start() + 1, line[m.end() :]):
            continue
        pieces.append(line[begin : m.end()])
        begin = m.end()
    pieces.append(line[begin:])
    return [p.strip() for p in pieces]


def _lines(text: str) -> list[str]:
    """Non-empty lines without list markers; a hard-wrapped line that goes on in lower case
    (the previous line has no final punctuation) is joined to the previous one."""
    out: list[str] = []
    for raw in text.splitlines():
        marked = bool(_LINE_MARKER.match(raw))
        line = _LINE_MARKER.sub("", raw, count=1).strip()
        if not line:
            continue
        if out and not marked and line[:1].islower() and not _TERMINAL.search(out[-1]):
            out[-1] = f"{out[-1]} {line}"
        else:
            out.append(line)
    return out


def split_sentences(text: str) -> list[str]:
    """The sentences of `text`, in order, stripped, without list markers or empty pieces.

    Dropped: pieces with no letter, digit or CJK character (stray punctuation) and headings that
    end in a colon ("Steps:", "建议："), which introduce sentences but are none.
    """
    sentences: list[str] = []
    for line in _lines(text or ""):
        for part in _INLINE_MARKER.split(line):
            sentences += [s for s in _split_line(part.strip()) if _is_sentence(s)]
    return sentences


def _is_sentence(piece: str) -> bool:
    return bool(re.search(r"\w", piece)) and not piece.endswith((":", "："))

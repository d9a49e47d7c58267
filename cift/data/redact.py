"""PII redaction for imported samples: regex rules that replace identifiers with placeholders.

Kinds and placeholders: NAME [NAME], DOB [DOB], PHONE [PHONE], EMAIL [EMAIL], ADDRESS [ADDRESS],
ID [ID]. Rules run in a fixed order (email, date of birth, labelled phone, labelled IDs, SSN,
passport-like, phone, 10-digit ID, street address, name), each on the output of the previous one, so
a span is counted once. Labels ("DOB:", "MRN", "Mr.") are kept; only the identifying value goes.

Documented limits (regexes, not NER):
- Names are found only after a cue: a title (Mr/Mrs/Ms/Miss/Mx/Dr/Prof/Doctor), a label
  ("Name:", "Patient name:", "Surname:", "Signed:") or "my name is / call me". A bare name in
  running text ("John said ...") is not found; a capitalised non-name after a title may be taken.
- Dates are redacted only when labelled as a birth date (DOB, date of birth, born on ...); other
  dates (onset, admission) are clinical and kept; a birth year alone ("born in 1980") is kept.
- Phone numbers need a label, a leading "+", a leading 0 (UK-style local) or the 3-3-4 pattern;
  an unlabelled run of exactly 10 digits is taken as an NHS-style ID; a spaced 3-3-4 NHS number
  without its label is redacted as PHONE (still removed, different kind).
- Addresses need a house number, capitalised street words and a street suffix (Street, St., Road,
  Ave, ...); a following postcode/ZIP is taken with them. Standalone cities/postcodes are kept.
- Clinical numbers are left alone by design: every numeric rule needs a label or an identifier
  shape (e.g. 39.2 C, BP 150/95, HbA1c 8.1%, 2 days, 34-year-old, 120/80 mmHg never match).
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

KINDS = ("NAME", "DOB", "PHONE", "EMAIL", "ADDRESS", "ID")
REDACTED_FIELDS = ("instruction", "input", "output")

_UPPER = "A-ZÀ-ÖØ-Þ"
_WORD = rf"[{_UPPER}][^\W\d_]*(?:['’-][^\W\d_]+)*"  # Smith, O'Brien, Smith-Jones, José
_STOP = (
    r"(?:The|A|An|And|Or|He|She|They|His|Her|Is|Was|Has|Had|With|Who|Said|Says|Reports|Presents|"
    r"Patient|Pt|Diagnosis|Advice|Age|Sex|Male|Female|Man|Woman|Boy|Girl|Child|Infant|Adult|"
    r"Unknown|None|Not|No|Yes|DOB|Phone|Email|Address|Tel)\b"
)
_NAME_WORD = rf"(?!{_STOP}){_WORD}"
_NAME = rf"{_NAME_WORD}(?:[ \t]+(?:[{_UPPER}]\.|{_NAME_WORD})(?![ \t]*:)){{0,3}}"
_CJK_NAME = r"[\u4e00-\u9fff]{2,4}"

_MONTH = (
    r"(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|"
    r"Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)"
)
_DATE = (
    r"(?:\d{4}[-/.]\d{1,2}[-/.]\d{1,2}"
    r"|\d{1,2}[-/.]\d{1,2}[-/.](?:\d{4}|\d{2})"
    rf"|\d{{1,2}}(?:st|nd|rd|th)?[ \t]+(?:of[ \t]+)?{_MONTH}\.?,?[ \t]+\d{{4}}"
    rf"|{_MONTH}\.?[ \t]+\d{{1,2}}(?:st|nd|rd|th)?,?[ \t]+\d{{4}}"
    rf"|{_MONTH}\.?[ \t]+\d{{4}})"
)
_SEP = r"[ \t]*(?:(?:is|was)[ \t]*)?[:#=\-–]?[ \t]*"
_ID_VALUE = (
    r"(?:\d{3}[ -]\d{3}[ -]\d{4}|(?=[A-Za-z0-9/-]*\d)[A-Za-z0-9][A-Za-z0-9/-]{2,}[A-Za-z0-9])"
)
_SUFFIX = (
    r"(?:Street|Road|Avenue|Lane|Drive|Boulevard|Close|Court|Crescent|Place|Square|Terrace|Way|"
    r"Gardens|Grove|Parade|Highway|Row|Mews|Walk|Hill|(?:St|Rd|Ave|Ln|Dr|Blvd|Ct|Pl|Sq|Hwy)\b\.?)"
)
_POSTCODE = r"(?:[A-Z]{1,2}\d[A-Z\d]?[ \t]*\d[A-Z]{2}|[A-Z]{2}[ \t]+\d{5}(?:-\d{4})?)\b"


def _digits_between(low: int, high: int) -> Callable[[str], bool]:
    """Validator: the matched value holds low..high digits (tells phones from short numbers)."""
    return lambda value: low <= sum(ch.isdigit() for ch in value) <= high


# (kind, pattern, validator). The named group `pii` is what gets replaced; default: whole match.
_RULES: list[tuple[str, re.Pattern[str], Callable[[str], bool] | None]] = [
    (
        "EMAIL",
        re.compile(r"(?<![\w.%+-])[\w.%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}\b"),
        None,
    ),
    (
        "DOB",
        re.compile(
            r"\b(?i:DOB|D\.O\.B\.?|date[ \t]+of[ \t]+birth|birth[ \t]?date|born(?:[ \t]+on)?)"
            rf"(?:[ \t]*\([^)]*\))?{_SEP}(?P<pii>(?i:{_DATE}))(?!\d)"
        ),
        None,
    ),
    (
        "PHONE",
        re.compile(
            r"\b(?i:phone|tel|telephone|mobile|cell|fax|contact[ \t]+number|"
            r"(?:call|ring|reach|text)[ \t]+me(?:[ \t]+(?:on|at))?)\b\.?"
            r"(?:[ \t]*(?i:number|no\.?|is|on|at)\b)*"
            rf"{_SEP}(?P<pii>\+?\(?\d[\d \t().-]{{5,}}\d\)?)(?![\w])"
        ),
        _digits_between(6, 15),
    ),
    (
        "ID",
        re.compile(
            r"(?:\b(?i:MRN|NHS|SSN|NINO|passport|medicare|medicaid|social[ \t]+security)"
            r"(?:[ \t]*(?i:number|num|no\.?|#|ID)\b)?"
            r"|\b(?i:patient|hospital|insurance|member|policy|medical[ \t]+record|chart|case|"
            r"health[ \t]+card|national[ \t]+insurance|licen[cs]e|account)"
            r"[ \t]*(?i:number|num|no\.?|#|ID)"
            r"|\bI\.?D\b\.?(?:[ \t]*(?i:number|no\.?)\b)?)"
            rf"{_SEP}(?P<pii>{_ID_VALUE})(?![\w])"
        ),
        None,
    ),
    ("ID", re.compile(r"(?<![\w-])\d{3}-\d{2}-\d{4}(?![\w-])"), None),  # SSN
    ("ID", re.compile(r"(?<![\w-])[A-Z]{1,2}\d{6,9}(?![\w-])"), None),  # passport-like
    (
        "PHONE",
        re.compile(r"(?<![\w+])\+\d{1,3}(?:[ \t.-]?\(?\d{1,4}\)?){2,5}(?![\w])"),
        _digits_between(8, 15),
    ),
    (
        "PHONE",
        re.compile(r"(?<![\w/.-])\(?\d{3}\)?[ \t.-]\d{3}[ \t.-]\d{4}(?![\w/-]|\.\d)"),
        None,
    ),
    (
        "PHONE",
        re.compile(r"(?<![\w/.-])\(?0\d{2,4}\)?[ \t.-]?\d{3,4}[ \t.-]?\d{3,4}(?![\w/-]|\.\d)"),
        _digits_between(10, 11),
    ),
    ("ID", re.compile(r"(?<![\w.+/-])\d{10}(?![\w/-]|\.\d)"), None),  # NHS-style
    (
        "ADDRESS",
        re.compile(
            rf"(?<![\w.,/-])\d{{1,5}}[A-Za-z]?,?[ \t]+(?:{_WORD}[ \t]+){{1,3}}{_SUFFIX}"
            rf"(?:,?[ \t]+(?:{_WORD},?[ \t]+){{0,2}}{_POSTCODE})?"
        ),
        None,
    ),
    (
        "NAME",
        re.compile(
            r"(?:\b(?i:(?:full|first|last|given|family|middle|patient(?:'s)?|sur)[ \t]?name"
            r"|name|signed(?:[ \t]+by)?)[ \t]*[:=][ \t]*"
            r"|\b(?i:my[ \t]+name[ \t]+is|my[ \t]+name's|I[ \t]+am[ \t]+called|I'm[ \t]+called"
            r"|call[ \t]+me)[ \t]+"
            r"|\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Doctor)\.?[ \t]+)"
            rf"(?P<pii>{_NAME}|{_CJK_NAME})"
        ),
        None,
    ),
]


def redact_text(text: str) -> tuple[str, list[dict[str, Any]]]:
    """Replace PII in `text`; returns (new text, [{"kind", "count"}] per kind found)."""
    counts = dict.fromkeys(KINDS, 0)
    for kind, pattern, valid in _RULES:
        text, found = _apply(text, kind, pattern, valid)
        counts[kind] += found
    return text, [{"kind": kind, "count": n} for kind, n in counts.items() if n]


def _apply(
    text: str, kind: str, pattern: re.Pattern[str], valid: Callable[[str], bool] | None
) -> tuple[str, int]:
    """One rule over `text`: replace the `pii` group (or the whole match) with [KIND]."""
    found = 0

    def replace(match: re.Match[str]) -> str:
        nonlocal found
        group = "pii" if "pii" in pattern.groupindex else 0
        value = match.group(group)
        if valid is not None and not valid(value):
            return match.group(0)
        found += 1
        start, end = match.start(group) - match.start(), match.end(group) - match.start()
        whole = match.group(0)
        return f"{whole[:start]}[{kind}]{whole[end:]}"

    return pattern.sub(replace, text), found


def redact_sample(sample: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """Redact instruction, input, output (and meta.system); returns (new sample, changes).

    changes = [{"field", "kind", "count"}]; they are appended to meta.redaction (kept across
    repeated imports). The input sample is not modified.
    """
    out = dict(sample)
    meta = dict(sample.get("meta") or {})
    changes: list[dict[str, Any]] = []
    for name in REDACTED_FIELDS:
        if isinstance(out.get(name), str):
            out[name], found = redact_text(out[name])
            changes += [{"field": name, **item} for item in found]
    if isinstance(meta.get("system"), str):
        meta["system"], found = redact_text(meta["system"])
        changes += [{"field": "meta.system", **item} for item in found]
    meta["redaction"] = [*(meta.get("redaction") or []), *changes]
    out["meta"] = meta
    return out, changes

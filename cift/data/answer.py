"""The answer format in one place: how an answer is rendered, parsed, asked for and stopped.

An answer is numbered reasoning steps, then one `Diagnosis: <condition>` line, then one
`Advice: <advice for the patient>` line. The reference answers and the teachers write it
(`render_answer`), validation, evaluation and the quality report read it (`parse_answer`), the
teacher prompt asks for it (`FORMAT_HINT`), and generation ends on its labels (`STOP_AFTER`,
`STEP_STOP`) — one module, so a change of the format cannot leave one of them behind.
"""

from __future__ import annotations

import re
from typing import Any

DIAGNOSIS = "Diagnosis:"
ADVICE = "Advice:"

# -- prompt: what a teacher is told about the format (after the rules of its reasoning)
FORMAT_HINT = (
    f'After the steps write one line "{DIAGNOSIS} <name of the condition>" and one line '
    f'"{ADVICE} <practical advice for the patient>".'
)
STEPS_PREFILL = "1."  # staged decoding opens the answer with its first step number

# -- stop: where generation ends
STOP_AFTER = ADVICE  # an answer ends once its Advice line is complete (evaluation, serving)
STEP_STOP = [DIAGNOSIS, "\nDiagnosis", ADVICE, "\n7."]  # staged decoding's steps: at most 6
LINE_STOP = ["\n"]  # staged decoding's Diagnosis and Advice fields are one line each

# -- the ranked score's cut: a line that starts to name the diagnosis (markup, "Final" allowed)
DIAGNOSIS_LINE = re.compile(
    r"(?im)^[ \t>#*_`-]*(?:final\s+|most\s+likely\s+)?diagnosis[*_`]*\s*[:\-]"
)

_STEP = re.compile(r"^(?:step\s*)?(\d{1,3})\s*(?:[.)]|:)(?!\d)\s*(.*\S)?\s*$", re.IGNORECASE)
_DIAGNOSIS = re.compile(
    r"^(?:final\s+|most\s+likely\s+)?diagnosis\s*[:\-]\s*(.*?)\s*$", re.IGNORECASE
)
_ADVICE = re.compile(r"^advice\s*[:\-]\s*(.*?)\s*$", re.IGNORECASE)
_MARKUP = re.compile(r"\*\*|__|`|^\s*#+\s*|^\s*[-*•]\s+")


def render_answer(structured: dict) -> str:
    """The sample's output text: numbered steps, then "Diagnosis: X", then "Advice: Y"."""
    lines = [f"{i}. {step}" for i, step in enumerate(structured["steps"], 1)]
    lines.append(f"{DIAGNOSIS} {structured['diagnosis']}")
    lines.append(f"{ADVICE} {structured['advice']}")
    return "\n".join(lines)


def strip_markup(line: str) -> str:
    """A line without Markdown emphasis, heading or bullet marks (models add them freely)."""
    return _MARKUP.sub("", line).strip()


def parse_answer(text: str) -> dict:
    """Split an answer into {"steps": [...], "diagnosis": str|None, "advice": str|None}.

    Steps are numbered lines ("1." / "1)" / "Step 1:"); the last "Diagnosis:" line wins; advice is
    the last "Advice:" line plus any plain lines that follow it. Markdown bold is ignored.
    """
    steps: list[str] = []
    diagnosis: str | None = None
    advice: list[str] | None = None
    in_advice = False  # plain lines right after "Advice:" continue it
    for raw in text.splitlines():
        line = strip_markup(raw)
        if not line:
            continue
        if m := _DIAGNOSIS.match(line):
            diagnosis, in_advice = strip_markup(m.group(1)) or None, False
        elif m := _ADVICE.match(line):
            advice, in_advice = [strip_markup(m.group(1))], True
        elif m := _STEP.match(line):
            in_advice = False
            if m.group(2):
                steps.append(strip_markup(m.group(2)))
        elif in_advice and advice is not None:
            advice.append(line)
    advice_text = " ".join(p for p in advice if p) if advice else ""
    return {"steps": steps, "diagnosis": diagnosis, "advice": advice_text or None}


def normalise_diagnosis(kb: Any, raw: str) -> str | None:
    """The KB's canonical name for a parsed diagnosis ("the most likely Influenza (flu)." ->
    "Influenza"), trying the text as written, then without brackets, qualifiers and a tail."""
    candidates = [raw, re.sub(r"\([^)]*\)", "", raw), re.split(r"[,;(]| - ", raw)[0]]
    candidates.append(re.sub(r"^(?:the\s+)?(?:most\s+likely\s+|probable\s+|likely\s+)", "", raw))
    for cand in candidates:
        name = kb.normalise(cand.strip().rstrip(".!").strip())
        if name:
            return name
    return None

"""Prompts: what the training sample asks, and what the teacher is told on top of it.

The sample keeps only the task (instruction + rendered record); the teacher prompt adds the
expert role, the rules (reason from the record only, numbered steps, a minimum length) and,
unless blind, the gold diagnosis.
"""

from __future__ import annotations

import random

from cift.data.render import instruction_for, render_record

TEACHER_RULES = (
    "Reason step by step like a doctor. Write at least {min_steps} numbered steps "
    "(1., 2., 3., ...), "
    "each citing findings from the record. Mention only findings, tests and values that the record "
    "contains; do not invent any. Write at least {min_chars} characters in total."
)
GOLD_HINT = "The confirmed diagnosis is {gold}. Explain how the findings in the record lead to it."
FORMAT_HINT = (
    'After the steps write one line "Diagnosis: <name of the condition>" and one line '
    '"Advice: <practical advice for the patient>".'
)


def sample_task(record: dict, kb, styles: list[str], seed: int | str) -> dict:
    """The record as a training task: {style, instruction, input}, seeded by run seed and record.

    The same rendering serves the teacher prompt, the sample and the contamination check."""
    rng = random.Random(f"{seed}-{record['id']}")
    style = rng.choice(styles)
    return {
        "style": style,
        "instruction": instruction_for(style, rng),
        "input": render_record(record, style, rng, kb=kb),
    }


def record_sample(record: dict, task: dict, structured: dict, *, sample_id: str, **meta) -> dict:
    """A sample of a record: its task, the canonical output text, and the structured answer."""
    from cift.data.reference import format_output

    return {
        "id": sample_id,
        "instruction": task["instruction"],
        "input": task["input"],
        "output": format_output(structured),
        "meta": {
            "batch": record["batch"],
            "record_id": record["id"],
            "condition": structured["diagnosis"],
            "style": task["style"],
            **meta,
            "structured": structured,
        },
    }


def user_message(instruction: str, input_text: str) -> str:
    """The user turn everywhere (training, scoring, serving): instruction, a blank line, input."""
    return f"{instruction}\n\n{input_text}" if input_text else instruction


def student_messages(sample: dict, system_prompt: str) -> list[dict]:
    """The deployed model's prompt in training, evaluation and serving: the explicit system
    message, then the sample's instruction + input as the user turn."""
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": user_message(sample["instruction"], sample.get("input", ""))},
    ]


def teacher_messages(
    system_prompt: str,
    instruction: str,
    input_text: str,
    *,
    gold: str | None,
    min_steps: int,
    min_chars: int,
) -> list[dict]:
    """Chat messages for a CoT teacher: expert role, rules, optional gold, the output format."""
    parts = [user_message(instruction, input_text), ""]
    if gold:
        parts.append(GOLD_HINT.format(gold=gold))
    parts += [TEACHER_RULES.format(min_steps=min_steps, min_chars=min_chars), FORMAT_HINT]
    return [
        {"role": "system", "content": system_prompt},
        {"role": "user", "content": "\n".join(parts)},
    ]

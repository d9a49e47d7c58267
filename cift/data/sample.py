"""The sample contract: a record as a task, a sample of a record, and how a sample is asked.

A sample is {id, instruction, input, output, meta}. Its task (instruction + rendered record) is
seeded by the run seed and the record, so the teacher prompt, the sample and the contamination
check see the same text; its output is the rendered answer (`cift.data.answer`); and the deployed
model is asked it the same way in training, scoring, evaluation and serving (`student_messages`).
"""

from __future__ import annotations

import random

from cift.data.answer import render_answer
from cift.data.render import instruction_for, render_record


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
    return {
        "id": sample_id,
        "instruction": task["instruction"],
        "input": task["input"],
        "output": render_answer(structured),
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

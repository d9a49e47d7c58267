"""The teacher prompt: the sample's task plus the expert role, the rules and (unless blind) gold.

The sample keeps only the task (`cift.data.sample`); the teacher is told on top of it to reason
from the record only, in numbered steps of a minimum length, and to end in the answer format
(`cift.data.answer.FORMAT_HINT`).
"""

from __future__ import annotations

from cift.data.answer import FORMAT_HINT
from cift.data.sample import user_message

TEACHER_RULES = (
    "Reason step by step like a doctor. Write at least {min_steps} numbered steps "
    "(1., 2., 3., ...), "
    "each citing findings from the record. Mention only findings, tests and values that the record "
    "contains; do not invent any. Write at least {min_chars} characters in total."
)
GOLD_HINT = "The confirmed diagnosis is {gold}. Explain how the findings in the record lead to it."


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

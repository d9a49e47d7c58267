"""General-domain replay data (the paper's 1:1 mix): the base model answers general seed tasks.

No public general-domain set can be downloaded here, so the deployed base model's own answers
to the shipped seed tasks are the replay data (generative replay); they pass the same kind of
validity rules, and every invalid answer is kept with its reason.
"""

from __future__ import annotations

from cift.data.general import general_messages, validate_general_answer
from cift.models.chat import Teacher, TeacherRequest
from cift.models.sampling import Sampling


def replay_samples(
    tasks: list[dict],
    teacher: Teacher,
    *,
    system_prompt: str,
    max_new_tokens: int,
    min_chars: int,
    max_retries: int,
    seed: int,
) -> tuple[list[dict], list[dict], dict]:
    """(samples, rejects, stats): one answer per task, retried like CoT generation."""
    samples: list[dict] = []
    rejects: list[dict] = []
    pending = list(tasks)
    tokens = 0
    for attempt in range(max_retries + 1):
        if not pending:
            break
        requests = [TeacherRequest(t["id"], general_messages(t, system_prompt)) for t in pending]
        # greedy first (the model's own best answer), sampling on retries
        replies = teacher.generate(
            requests,
            Sampling(
                max_new_tokens=max_new_tokens,
                temperature=0.0 if attempt == 0 else 0.7,
                top_p=0.95,
                seed=seed + attempt,
            ),
        )
        retry = []
        for task, reply in zip(pending, replies, strict=True):
            tokens += reply.completion_tokens
            text = reply.text.strip()
            reason = reply.error or validate_general_answer(task, text, min_chars=min_chars)
            if reason is None:
                samples.append(_sample(task, text, teacher.name, attempt))
                continue
            final = attempt == max_retries
            rejects.append(
                {
                    "task_id": task["id"],
                    "attempt": attempt,
                    "reason": reason,
                    "final": final,
                    "text": text,
                }
            )
            retry.append(task)
        pending = retry
    attempted = len(samples) + len(rejects)
    stats = {
        "attempted": attempted,
        "valid": len(samples),
        "rejected": len(rejects),
        "yield": len(samples) / attempted if attempted else 0.0,
        "completion_tokens": tokens,
    }
    return samples, rejects, stats


def _sample(task: dict, text: str, teacher: str, attempt: int) -> dict:
    return {
        "id": f"{task['id']}-replay",
        "instruction": task["instruction"],
        "input": task["input"],
        "output": text,
        "meta": {
            "batch": "general",
            "category": task["category"],
            "source": "general",
            "teacher": teacher,
            "generation": {"attempt": attempt},
        },
    }

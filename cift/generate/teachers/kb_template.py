"""A teacher that writes the reasoning from the knowledge base in code (tests, CI, smoke runs).

It reads the structured record, not the prompt, so it is instant and always faithful; samples it
writes carry `meta.teacher = "kb_template"` so they are never mistaken for LLM output.
"""

from __future__ import annotations

import random

from cift.data.answer import render_answer
from cift.data.reference import reference_answer
from cift.kb import load_kb
from cift.models.chat import TeacherReply, TeacherRequest
from cift.models.sampling import Sampling


class KBTemplateTeacher:
    rewrites_text = False  # it writes answers from the record, it cannot rewrite text

    def __init__(
        self, kb: str = "medical", name: str = "kb_template", restate: bool = True
    ) -> None:
        self.kb = load_kb(kb)
        self.name = name
        self.restate = restate  # False: the reasoning without the steps that restate the record

    def generate(
        self,
        requests: list[TeacherRequest],
        sampling: Sampling,
    ) -> list[TeacherReply]:
        replies = []
        for req in requests:
            if req.record is None:
                raise ValueError(f"{req.key}: the kb_template teacher needs the structured record")
            rng = random.Random(f"{sampling.seed}-{req.key}")
            text = render_answer(reference_answer(self.kb, req.record, rng, restate=self.restate))
            replies.append(TeacherReply(req.key, text, 0, len(text.split())))
        return replies

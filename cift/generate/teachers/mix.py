"""A teacher config as members with shares: one teacher (share 1) or a mix such as
`conf/teacher/mixed.yaml`, where each record goes to one member, drawn with the seed.

A real data stream mixes clean and noisy answers; a mix of the embedded LLM (noisy reasoning,
about half of its answers valid) and the KB template (clean, instant) is such a stream at a cost
a CPU run can pay, and it is what the filters are for. Each member keeps its own decoding.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig


@dataclass
class TeacherMember:
    name: str
    share: float
    decoding: str  # single | staged
    blind: bool
    backend: Any  # the instantiated teacher


def member_configs(teacher_cfg: DictConfig) -> dict[str, DictConfig]:
    """{member name: its config}; a plain teacher config is its own single member."""
    members = teacher_cfg.get("members")
    return dict(members.items()) if members else {teacher_cfg.name: teacher_cfg}


def build_members(teacher_cfg: DictConfig) -> list[TeacherMember]:
    """The members with their backends built, in config order; shares are normalised to 1."""
    cfgs = member_configs(teacher_cfg)
    total = sum(float(c.get("share", 1.0)) for c in cfgs.values())
    return [
        TeacherMember(
            name=name,
            share=float(c.get("share", 1.0)) / total,
            decoding=c.decoding,
            blind=bool(c.blind),
            backend=instantiate(c.backend),
        )
        for name, c in cfgs.items()
    ]


def assign(records: list[dict], members: list[TeacherMember], seed: int) -> dict[str, list[dict]]:
    """{member name: its records}: each record's member drawn from a stream seeded by the record
    id, so a record keeps its teacher whatever else the batch holds."""
    out: dict[str, list[dict]] = {m.name: [] for m in members}
    for record in records:
        u = random.Random(f"{seed}-teacher-{record['id']}").random()
        acc = 0.0
        for m in members:
            acc += m.share
            if u < acc:
                break
        out[m.name].append(record)
    return out

"""Prompt evolution: validity of evolved instructions, the pool, and assembled prompts."""

from __future__ import annotations

from cift.generate.evolve import PromptAssembler, check_instruction, clean, evolve, load_parts
from cift.models.chat import TeacherReply

PARTS = load_parts()
KW = PARTS["keywords"]


class ScriptedLLM:
    """Replies by operation: a good rewrite, a task-losing one, and debris."""

    def __init__(self):
        self.calls = []

    def generate(self, requests, sampling):
        self.calls.append(len(requests))
        out = []
        for req in requests:
            op = req.key.rsplit("-", 1)[1]
            parent = req.messages[1]["content"].removeprefix("Instruction: ")
            text = {
                "rewrite": f'New instruction: "Carefully, {parent[0].lower()}{parent[1:]}"',
                "add_constraints": "Write a nice poem about the weather in spring today.",
                "deepen": "Think about {record} and the diagnosis very deeply, step by step.",
            }[op]
            out.append(TeacherReply(req.key, text, 10, 20))
        return out


def test_instruction_checks_name_the_reason():
    seen = set()
    parent = "Give the most likely diagnosis."
    assert check_instruction("", "diagnosis", parent, seen, KW) == "empty"
    assert check_instruction("Diagnose now.", "diagnosis", parent, seen, KW) == "too_short"
    assert check_instruction("word " * 70, "diagnosis", parent, seen, KW) == "too_long"
    assert (
        check_instruction("Write about the {input} here please now", "diagnosis", parent, seen, KW)
        == "template_debris"
    )
    assert (
        check_instruction(
            "Tell me a story about a dragon and a castle", "diagnosis", parent, seen, KW
        )
        == "lost_task"
    )
    assert check_instruction(
        "Give the most likely diagnosis!", "diagnosis", "Give the most likely diagnosis", seen, KW
    ) in ("too_short", "unchanged")
    ok = "Using the findings, give the most likely diagnosis and explain each step."
    assert check_instruction(ok, "diagnosis", parent, seen, KW) is None
    assert clean('Instruction: "Say it."\nmore') == "Say it."


def test_evolution_keeps_valid_rewrites_and_every_reject_with_a_reason():
    llm = ScriptedLLM()
    pool, rejects, counts = evolve(
        llm, PARTS, operations=["rewrite", "add_constraints", "deepen"], rounds=2, seed=3
    )
    n_seeds = sum(len(v) for v in PARTS["seeds"].values())
    assert llm.calls[0] == 3 * n_seeds
    assert {p["task"] for p in pool} == set(PARTS["seeds"])  # one good rewrite per seed
    assert all(p["operation"] == "rewrite" for p in pool)
    assert {r["reason"] for r in rejects} >= {"lost_task", "template_debris"}
    assert counts["attempted"] == len(pool) + len(rejects) and counts["kept"] == len(pool)
    assert any(p["round"] == 1 for p in pool)  # round 2 evolves round 1's survivors


def test_assembled_prompts_follow_the_weights_and_are_seeded():
    pool = [{"task": "triage", "instruction": "Triage this patient urgently and name it."}]
    only_triage = PromptAssembler(pool, PARTS, {"triage": 1.0}, seed=1)
    task, text = only_triage("b1-0001")
    assert task == "triage" and "Triage this patient urgently" in text
    assert PARTS["formats"]["triage"] in text
    assert any(scene in text for scene in PARTS["scenes"])
    assert only_triage("b1-0001") == (task, text)
    mixed = PromptAssembler([], PARTS, {"diagnosis": 0.5, "summary": 0.5}, seed=1)
    kinds = {mixed(f"r{i}")[0] for i in range(40)}
    assert kinds == {"diagnosis", "summary"}  # an empty pool falls back to the seeds


def test_a_real_model_evolves_in_one_batched_call():
    """The tiny random model writes nonsense: every attempt ends in the pool or the rejects."""
    from cift.models import ModelSpec
    from cift.models.local_chat import LocalTeacher

    llm = LocalTeacher(ModelSpec(name="tiny", source="tiny_random"), batch_size=16)
    pool, rejects, counts = evolve(llm, PARTS, operations=["rewrite"], max_new_tokens=8)
    assert counts["attempted"] == sum(len(v) for v in PARTS["seeds"].values())
    assert all(r["reason"] for r in rejects) and len(pool) + len(rejects) == counts["attempted"]

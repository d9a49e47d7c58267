"""General-domain seed tasks: the shipped file, its validation, the replay/held-out split, and
the reject reasons for generated answers."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
import yaml

from cift.data.general import (
    CATEGORIES,
    GeneralTasksError,
    contains_answer,
    general_messages,
    load_general_tasks,
    split_general,
    subsample,
    validate_general_answer,
)


@pytest.fixture(scope="module")
def tasks() -> list[dict]:
    return load_general_tasks()


def _write(tmp_path: Path, doc: object) -> Path:
    path = tmp_path / "general_tasks.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def _task(**kw) -> dict:
    base = {
        "id": "t-1",
        "category": "writing",
        "instruction": "Write.",
        "input": "",
        "answer": None,
    }
    return base | kw


# ---------------------------------------------------------------- loader


def test_shipped_file_is_valid(tasks):
    assert len(tasks) >= 120
    counts = Counter(t["category"] for t in tasks)
    assert set(counts) == set(CATEGORIES)
    assert min(counts.values()) >= 10
    assert len({t["id"] for t in tasks}) == len(tasks)
    for t in tasks:
        assert set(t) == {"id", "category", "instruction", "input", "answer"}
        if t["category"] == "arithmetic":
            assert t["answer"], f"{t['id']}: arithmetic needs an exact answer"


def test_shipped_answers_accept_a_correct_reply(tasks):
    # every exact answer must be findable in a reply that states it
    for t in tasks:
        if t["answer"] is not None:
            reply = f"Let me think it through carefully. The answer is {t['answer']}."
            assert validate_general_answer(t, reply) is None, t["id"]


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"tasks": [_task(instruction="  ")]}, "tasks[0].instruction: must be a non-empty string"),
        ({"tasks": [_task(), _task(category="poetry", id="t-2")]}, "tasks[1].category"),
        ({"tasks": [_task(), _task()]}, "tasks[1].id: duplicate id 't-1'"),
        ({"tasks": [_task(answer=42)]}, "tasks[0].answer: must be null or a string"),
        ({"tasks": [_task(input=None)]}, "tasks[0].input: must be a string"),
        ({"tasks": [_task(extra=1)]}, "tasks[0]: unknown key(s) ['extra']"),
        ({"tasks": ["just text"]}, "tasks[0]: must be a mapping"),
        ({"items": []}, "tasks: must be a list"),
        ({"tasks": []}, "tasks: must not be empty"),
    ],
)
def test_malformed_file_names_file_and_key(tmp_path, doc, message):
    path = _write(tmp_path, doc)
    with pytest.raises(GeneralTasksError) as info:
        load_general_tasks(path)
    assert str(info.value).startswith(f"{path}: ")
    assert message in str(info.value)


def test_invalid_yaml_names_file(tmp_path):
    path = tmp_path / "broken.yaml"
    path.write_text("tasks: [\n", encoding="utf-8")
    with pytest.raises(GeneralTasksError, match=r"broken\.yaml: invalid YAML"):
        load_general_tasks(path)


def test_optional_keys_default(tmp_path):
    path = _write(tmp_path, {"tasks": [{"id": "a", "category": "code", "instruction": " Do. "}]})
    assert load_general_tasks(path) == [
        {"id": "a", "category": "code", "instruction": "Do.", "input": "", "answer": None}
    ]


# ---------------------------------------------------------------- split


def test_split_is_deterministic_and_order_independent(tasks):
    replay, heldout = split_general(tasks, 0.2, seed=3)
    again = split_general(list(reversed(tasks)), 0.2, seed=3)
    assert {t["id"] for t in heldout} == {t["id"] for t in again[1]}
    assert split_general(tasks, 0.2, seed=3) == (replay, heldout)
    other = split_general(tasks, 0.2, seed=4)[1]
    assert {t["id"] for t in other} != {t["id"] for t in heldout}


def test_split_is_a_stratified_partition(tasks):
    replay, heldout = split_general(tasks, 0.25, seed=0)
    assert sorted(t["id"] for t in replay + heldout) == sorted(t["id"] for t in tasks)
    assert not {t["id"] for t in replay} & {t["id"] for t in heldout}
    total = Counter(t["category"] for t in tasks)
    held = Counter(t["category"] for t in heldout)
    for category, n in total.items():
        assert held[category] == round(n * 0.25), category
    assert [t["id"] for t in replay] == [t["id"] for t in tasks if t in replay]  # input order


def test_split_edges():
    small = [_task(id=f"s{i}", category=c) for i, c in enumerate(["code", "code", "classify"])]
    replay, heldout = split_general(small, 0.01, seed=0)
    assert [t["category"] for t in heldout] == ["code"]  # >= 1 per category with n >= 2
    assert len(replay) == 2
    assert split_general(small, 0.0, seed=0) == (small, [])
    with pytest.raises(ValueError, match="heldout_fraction"):
        split_general(small, 1.0, seed=0)


def test_subsample_keeps_order_and_draws_each_stream_apart(tasks):
    assert subsample(tasks, None, seed=1) == tasks
    assert subsample(tasks, len(tasks) + 1, seed=1) == tasks
    drawn = {s: subsample(tasks, 8, seed=1, stream=s) for s in ("replay", "heldout")}
    for picked in drawn.values():
        assert len(picked) == 8
        assert [tasks.index(t) for t in picked] == sorted(tasks.index(t) for t in picked)
    assert drawn["replay"] == subsample(tasks, 8, seed=1)  # "replay" is the default stream
    assert drawn["replay"] != drawn["heldout"]


# ---------------------------------------------------------------- messages


def test_general_messages():
    t = _task(instruction="Summarise this.", input="A long text.")
    assert general_messages(t, "Be helpful.") == [
        {"role": "system", "content": "Be helpful."},
        {"role": "user", "content": "Summarise this.\n\nA long text."},
    ]
    assert general_messages(_task(instruction="Write."), "") == [
        {"role": "user", "content": "Write."}
    ]


# ---------------------------------------------------------------- answer validation

ARITH = _task(category="arithmetic", answer="1845")
WRITING = _task(category="writing")


@pytest.mark.parametrize(
    ("task", "text", "reason"),
    [
        (WRITING, "   \n", "empty"),
        (WRITING, "Too short.", "too_short"),
        (ARITH, "1,845", None),  # a bare exact answer is fine for arithmetic
        (_task(category="knowledge", answer="Paris"), "Paris.", None),
        (_task(category="classify", answer="spam"), "Spam", None),
        (_task(category="reasoning", answer="9"), "9 sheep", "too_short"),
        (
            WRITING,
            "The cat sat down. " * 3 + "Then it left the room quietly.",
            "degenerate_repetition",
        ),
        (WRITING, "I am here for you " * 8, "degenerate_repetition"),
        (ARITH, "487 plus 1358 gives 1846, which is the total sum.", "wrong_answer"),
        (ARITH, "Adding 487 and 1358 gives 1,845 in total.", None),
        (WRITING, "Dear Sam, could we move tomorrow's meeting to 14:00? Thanks, Ana", None),
    ],
)
def test_validate_general_answer(task, text, reason):
    assert validate_general_answer(task, text) == reason


def test_min_chars_is_configurable():
    assert validate_general_answer(WRITING, "A fine short reply.", min_chars=5) is None


@pytest.mark.parametrize(
    ("text", "answer", "found"),
    [
        ("The answer is 42.", "4", False),
        ("x = 4.5", "4", False),
        ("so x = 6.", "6", True),
        ("It costs 12.50 euros", "12.5", True),
        ("The capital is São Paulo", "Sao Paulo", True),
        ("That is 3/4 of it", "3/4", True),
        ("It prints [1, 2, 3, 4]", "[1, 2, 3, 4]", True),
        ("The result is -7", "-7", True),
        ("5-7 is negative", "-7", False),
        ("Lookup is O(1) on average", "O(1)", True),
        ("William Shakespeare wrote it", "Shakespeare", True),
    ],
)
def test_contains_answer(text, answer, found):
    assert contains_answer(text, answer) is found

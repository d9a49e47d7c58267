"""The one sample reader on the bad-input corpus, format conversion, and atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cift.data.check import check_file, export_file, import_file, rejects_path
from cift.data.formats import export_samples, from_sharegpt, to_sharegpt
from cift.io.jsonl import (
    Reject,
    StrictInputError,
    read_jsonl_trusted,
    read_samples,
    sample_id,
    write_json_atomic,
    write_jsonl_atomic,
    write_rejects,
)

FIXTURES = Path(__file__).parent / "fixtures" / "bad_inputs"
EXPECTED = json.loads((FIXTURES / "expected.json").read_text(encoding="utf-8"))
GOOD = {"instruction": "Diagnose.", "input": "Fever for 2 days.", "output": "Diagnosis: flu"}


def write_lines(path: Path, *lines: str | bytes) -> Path:
    """Write raw lines (each followed by \\n) to path."""
    path.write_bytes(b"".join((x if isinstance(x, bytes) else x.encode()) + b"\n" for x in lines))
    return path


def test_every_fixture_is_listed() -> None:
    assert sorted(EXPECTED) == sorted(p.name for p in FIXTURES.glob("*.jsonl"))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_counts_and_reasons(name: str) -> None:
    expected = EXPECTED[name]
    result = read_samples(FIXTURES / name)
    summary = result.summary()
    assert summary["accepted"] == expected["accepted"]
    assert summary["rejected"] == expected["rejected"]
    assert summary["blank"] == expected["blank"]
    assert [r["reason"] for r in summary["rejects"]] == expected["reasons"]
    assert result.lines == len(result.accepted) + len(result.rejects) + result.blank
    assert summary["lines"] == result.lines
    assert json.dumps(summary)  # JSON-ready


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_fixture_rejects_name_file_line_field(name: str, tmp_path: Path) -> None:
    path = FIXTURES / name
    result = read_samples(path)
    for reject in result.rejects:
        assert reject.file == str(path)
        assert f"{path}:{reject.line}:" in reject.message
        assert reject.reason in reject.message
        if reject.field is not None:
            assert repr(reject.field) in reject.message
        assert len(reject.raw) <= 2000
    out = tmp_path / "rejects.jsonl"
    assert write_rejects(out, result.rejects) == len(result.rejects)  # raw is always writable
    assert [row["line"] for row in read_jsonl_trusted(out)] == [r.line for r in result.rejects]


@pytest.mark.parametrize("name", [n for n, e in sorted(EXPECTED.items()) if e["rejected"]])
def test_fixture_strict_raises(name: str) -> None:
    with pytest.raises(StrictInputError) as info:
        read_samples(FIXTURES / name, strict=True)
    first = read_samples(FIXTURES / name).rejects[0]
    assert f"{first.file}:{first.line}" in str(info.value)
    assert first.reason in str(info.value)
    assert isinstance(info.value, ValueError)


def test_strict_on_clean_file_returns() -> None:
    result = read_samples(FIXTURES / "06_bom_and_crlf.jsonl", strict=True)
    assert [s["id"] for s in result.accepted] == ["g1", "b2"]


def test_bom_and_crlf_accepted_clean() -> None:
    result = read_samples(FIXTURES / "06_bom_and_crlf.jsonl")
    for sample in result.accepted:
        assert not sample["output"].endswith("\r")
        assert not sample["id"].startswith("\ufeff")


def test_not_utf8_line_is_named_and_raw_writable() -> None:
    reject = read_samples(FIXTURES / "05_not_utf8.jsonl").rejects[0]
    assert (reject.line, reject.field) == (2, "output")
    assert "\ufffd" in reject.raw
    json.dumps(reject.to_dict(), ensure_ascii=False).encode("utf-8")


def test_normalised_sample_shape_and_derived_id(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "s.jsonl", json.dumps({"instruction": "Q?", "output": "A."}))
    (sample,) = read_samples(path).accepted
    assert sample == {
        "id": sample_id("Q?", "", "A."),
        "instruction": "Q?",
        "input": "",
        "output": "A.",
        "meta": {},
    }
    assert len(sample["id"]) == 16
    int(sample["id"], 16)


def test_sample_id_is_nfc_normalised() -> None:
    assert sample_id("cafe\u0301", "", "x") == sample_id("caf\u00e9", "", "x")
    assert sample_id("a", "", "b") != sample_id("a", "b", "")


def test_derived_duplicate_rejected_first_wins(tmp_path: Path) -> None:
    line = json.dumps(GOOD)
    path = write_lines(tmp_path / "d.jsonl", line, line)
    result = read_samples(path)
    assert len(result.accepted) == 1
    assert (result.rejects[0].line, result.rejects[0].reason) == (2, "duplicate_id")
    assert "line 1" in result.rejects[0].message


def test_unknown_keys_kept_in_meta(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "x.jsonl", json.dumps({**GOOD, "history": [], "meta": {"a": 1}}))
    (sample,) = read_samples(path).accepted
    assert sample["meta"] == {"a": 1, "extra": {"history": []}}


@pytest.mark.parametrize(
    ("obj", "reason"),
    [
        ({**GOOD, "id": 5}, "wrong_type:id"),
        ({**GOOD, "id": "  "}, "empty_field:id"),
        ({**GOOD, "meta": []}, "wrong_type:meta"),
        ({**GOOD, "input": 3}, "wrong_type:input"),
        ({"output": "x"}, "missing_field:instruction"),
        ({**GOOD, "meta": {"note": "a\x01b"}}, "control_chars:meta.note"),
    ],
)
def test_field_rules(obj: dict, reason: str, tmp_path: Path) -> None:
    path = write_lines(tmp_path / "r.jsonl", json.dumps(obj))
    assert [r.reason for r in read_samples(path).rejects] == [reason]


def test_too_large(tmp_path: Path) -> None:
    big = json.dumps({**GOOD, "input": "x" * 500})
    path = write_lines(tmp_path / "big.jsonl", json.dumps(GOOD), big)
    result = read_samples(path, max_sample_bytes=300)
    assert [(r.line, r.reason) for r in result.rejects] == [(2, "too_large")]
    assert len(read_samples(path).accepted) == 2


def test_line_counting_edge_cases(tmp_path: Path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_bytes(b"")
    assert read_samples(empty).lines == 0
    no_newline = tmp_path / "nn.jsonl"
    no_newline.write_bytes(json.dumps(GOOD).encode())
    assert read_samples(no_newline).summary()["accepted"] == 1
    trailing = write_lines(tmp_path / "t.jsonl", json.dumps(GOOD), "")
    summary = read_samples(trailing).summary()
    assert (summary["lines"], summary["blank"]) == (2, 1)


def test_unknown_format_raises(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "a.jsonl", json.dumps(GOOD))
    with pytest.raises(ValueError, match="unknown sample format"):
        read_samples(path, fmt="csv")


def test_sharegpt_conversion(tmp_path: Path) -> None:
    conversations = {
        "id": "c1",
        "conversations": [
            {"from": "system", "value": "You are a doctor."},
            {"from": "human", "value": "I have a fever."},
            {"from": "gpt", "value": "Diagnosis: flu"},
            {"from": "human", "value": "Thanks"},
        ],
    }
    messages = {
        "messages": [
            {"role": "user", "content": "Cough?"},
            {"role": "assistant", "content": "Diagnosis: cold"},
        ],
        "source": "web",
    }
    missing_answer = {"conversations": [{"from": "human", "value": "Hi"}]}
    empty_answer = {
        "conversations": [{"from": "user", "value": "Hi"}, {"from": "gpt", "value": " "}]
    }
    path = write_lines(
        tmp_path / "sg.jsonl", *(json.dumps(o) for o in (conversations, messages, missing_answer))
    )
    path.write_text(path.read_text() + json.dumps(empty_answer) + "\n")
    result = read_samples(path, fmt="sharegpt")
    first, second = result.accepted
    assert first["id"] == "c1"
    assert (first["instruction"], first["input"], first["output"]) == (
        "I have a fever.",
        "",
        "Diagnosis: flu",
    )
    assert first["meta"]["system"] == "You are a doctor."
    assert first["meta"]["extra_turns"] == [{"from": "human", "value": "Thanks"}]
    assert second["id"] == sample_id("Cough?", "", "Diagnosis: cold")
    assert second["meta"] == {"extra": {"source": "web"}}
    reasons = [(r.line, r.field, r.reason) for r in result.rejects]
    assert reasons == [
        (3, "conversations[gpt]", "missing_field:conversations[gpt]"),
        (4, "conversations[1].value", "empty_field:conversations[1].value"),
    ]
    auto = read_samples(path, fmt="auto")
    assert len(auto.accepted) == 2


def test_sharegpt_round_trip() -> None:
    sample = {
        "id": "s1",
        "instruction": "Diagnose.",
        "input": "Fever.",
        "output": "Diagnosis: flu",
        "meta": {"system": "Be brief.", "batch": "b1"},
    }
    shared = to_sharegpt(sample)
    assert [t["from"] for t in shared["conversations"]] == ["system", "human", "gpt"]
    back = from_sharegpt(shared)
    assert back["instruction"] == "Diagnose.\n\nFever."
    assert back["meta"] == {"batch": "b1", "system": "Be brief."}
    (chat,) = export_samples([sample], "messages")
    assert [m["role"] for m in chat["messages"]] == ["system", "user", "assistant"]
    with pytest.raises(ValueError, match="unknown export format"):
        export_samples([sample], "csv")


def test_write_jsonl_atomic_round_trip(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "out.jsonl"
    rows = [{"text": "发烧 🤒"}, {"n": 1}]
    assert write_jsonl_atomic(path, rows) == 2
    assert "发烧 🤒" in path.read_text(encoding="utf-8")
    assert read_jsonl_trusted(path) == rows
    assert list(path.parent.iterdir()) == [path]


def test_atomic_write_failure_keeps_old_content(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    write_jsonl_atomic(path, [{"old": True}])

    def rows():
        yield {"new": 1}
        raise RuntimeError("generator failed mid-write")

    with pytest.raises(RuntimeError, match="mid-write"):
        write_jsonl_atomic(path, rows())
    assert read_jsonl_trusted(path) == [{"old": True}]
    assert list(tmp_path.iterdir()) == [path]  # no temp file left behind


def test_write_json_atomic(tmp_path: Path) -> None:
    path = tmp_path / "m.json"
    write_json_atomic(path, {"b": 1, "a": "é"})
    assert path.read_text(encoding="utf-8") == '{\n  "b": 1,\n  "a": "é"\n}\n'


def test_read_jsonl_trusted_names_file_and_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "bad.jsonl", "{}", "", "{oops")
    with pytest.raises(ValueError, match=rf"{path.name}:3"):
        read_jsonl_trusted(path)


def test_reject_to_dict() -> None:
    reject = Reject("f.jsonl", 2, "output", "empty_field:output", "f.jsonl:2: ...", "{}")
    assert reject.to_dict() == {
        "file": "f.jsonl",
        "line": 2,
        "field": "output",
        "reason": "empty_field:output",
        "message": "f.jsonl:2: ...",
        "raw": "{}",
    }


def test_check_import_export(tmp_path: Path) -> None:
    src = FIXTURES / "10_blank_and_comment_lines.jsonl"
    assert check_file(src)["accepted"] == 2
    dst = tmp_path / "data" / "imported.jsonl"
    summary = import_file(src, dst, fmt="alpaca")
    assert (summary["accepted"], summary["rejected"], summary["blank"]) == (2, 1, 2)
    samples = read_jsonl_trusted(dst)
    assert [s["meta"]["source"] for s in samples] == ["imported", "imported"]
    assert [r["reason"] for r in read_jsonl_trusted(rejects_path(dst))] == ["invalid_json"]
    out = tmp_path / "export.jsonl"
    assert export_file(dst, out, "sharegpt")["accepted"] == 2
    assert all("conversations" in row for row in read_jsonl_trusted(out))


def test_import_strict_writes_nothing(tmp_path: Path) -> None:
    dst = tmp_path / "out.jsonl"
    with pytest.raises(StrictInputError):
        import_file(FIXTURES / "02_missing_output.jsonl", dst, strict=True)
    assert not dst.exists()
    assert not rejects_path(dst).exists()
    with pytest.raises(StrictInputError):
        check_file(FIXTURES / "02_missing_output.jsonl", strict=True)

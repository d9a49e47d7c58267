"""The one JSONL reader/writer for samples, plus the atomic writes every stage uses.

Every reader of user-supplied samples goes through `read_samples`, so the bad-input rules live in
one place: each line is accepted, rejected (with file, line, field and a reason code) or blank, and
`lines == accepted + rejected + blank` always holds. Files cift wrote itself are read back with
`read_jsonl_trusted`. Writes go to a temp file in the destination folder and are `os.replace`d, so a
crash mid-write never leaves a half-written output for DVC to cache.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import tempfile
import unicodedata
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from cift.data.formats import FormatError, convert_sharegpt, is_sharegpt, json_type

DEFAULT_MAX_SAMPLE_BYTES = 2 * 1024 * 1024
READ_FORMATS = ("alpaca", "sharegpt", "auto")
RAW_LIMIT = 2000  # chars of the offending line kept in a reject
STRICT_SHOWN = 10  # rejects listed in a StrictInputError message

_BOM = b"\xef\xbb\xbf"
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")  # C0 except \t \n \r
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # left by surrogateescape: bytes that were not UTF-8
_ALPACA_FIELDS = {"instruction": True, "input": False, "output": True, "id": False}


def sample_id(instruction: str, input: str, output: str) -> str:
    """Content id: sha256 of the NFC-normalised JSON triple, first 16 hex digits."""
    text = json.dumps([instruction, input, output], ensure_ascii=False)
    return hashlib.sha256(unicodedata.normalize("NFC", text).encode("utf-8")).hexdigest()[:16]


class StrictInputError(ValueError):
    """Raised by strict reads when any line was rejected (before anything is written)."""


@dataclass
class Reject:
    """One rejected line: where it is, which field, why (a reason code), and the line itself."""

    file: str
    line: int
    field: str | None
    reason: str
    message: str
    raw: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReadResult:
    """Outcome of reading one file; `lines == len(accepted) + len(rejects) + blank`."""

    file: str
    lines: int
    accepted: list[dict[str, Any]] = field(default_factory=list)
    rejects: list[Reject] = field(default_factory=list)
    blank: int = 0

    def summary(self) -> dict[str, Any]:
        """Counts and per-line reasons, JSON-ready (what `cift data check` prints)."""
        return {
            "file": self.file,
            "lines": int(self.lines),
            "accepted": len(self.accepted),
            "rejected": len(self.rejects),
            "blank": int(self.blank),
            "rejects": [
                {"line": r.line, "field": r.field, "reason": r.reason} for r in self.rejects
            ],
        }


class _Bad(Exception):
    """Internal: the first defect found in a line."""

    def __init__(self, field: str | None, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.field, self.reason, self.detail = field, reason, detail


def read_samples(
    path: str | Path,
    *,
    fmt: str = "alpaca",
    strict: bool = False,
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES,
) -> ReadResult:
    """Read a JSONL file of samples, sorting every line into accepted, rejected or blank.

    fmt: "alpaca", "sharegpt" (conversations/messages, converted to Alpaca) or "auto" (per line).
    max_sample_bytes: longer lines (in bytes) are rejected as `too_large`.
    strict: raise StrictInputError listing the first rejects if any line was rejected.
    """
    if fmt not in READ_FORMATS:
        raise ValueError(f"unknown sample format {fmt!r}; expected one of {READ_FORMATS}")
    return _read_lines(path, lambda text: _parse_sample(text, fmt), strict, max_sample_bytes)


def read_cases(
    path: str | Path,
    text_field: str,
    label_field: str,
    *,
    strict: bool = False,
    max_sample_bytes: int = DEFAULT_MAX_SAMPLE_BYTES,
) -> ReadResult:
    """Read a JSONL file of free-text cases with a label (`cift eval-file`), under the same line
    rules as samples. Accepted rows: {"id", "text", "label", "meta"}; the id is the line's `id`
    or derived from text + label (a repeated id is rejected)."""

    def parse(text: str) -> dict[str, Any]:
        obj = _load_object(text)
        for key in (text_field, label_field):
            value = obj.get(key)
            if value is None:
                raise _Bad(key, f"missing_field:{key}", "required field is missing")
            if not isinstance(value, str):
                raise _Bad(key, f"wrong_type:{key}", f"must be a string, got {json_type(value)}")
            if not value.strip():
                raise _Bad(key, f"empty_field:{key}", "empty or whitespace-only")
        _check_text(obj, {})
        given = obj.get("id")
        case_id = given if isinstance(given, str) and given.strip() else None
        case_id = case_id or sample_id("", obj[text_field], obj[label_field])
        meta = {k: v for k, v in obj.items() if k not in (text_field, label_field, "id")}
        return {"id": case_id, "text": obj[text_field], "label": obj[label_field], "meta": meta}

    return _read_lines(path, parse, strict, max_sample_bytes)


def _read_lines(path: str | Path, parse: Any, strict: bool, max_sample_bytes: int) -> ReadResult:
    """The line loop every reader shares: blank lines, size limit, parse, first id wins."""
    name = str(path)
    result = ReadResult(file=name, lines=0)
    first_line_of: dict[str, int] = {}
    for number, raw in _split_lines(Path(path).read_bytes()):
        result.lines += 1
        if not raw.strip():
            result.blank += 1
            continue
        text = raw.decode("utf-8", "surrogateescape")
        try:
            if len(raw) > max_sample_bytes:
                raise _Bad(None, "too_large", f"{len(raw)} bytes > max_sample_bytes")
            sample = parse(text)
            first = first_line_of.get(sample["id"])
            if first is not None:
                raise _Bad(
                    "id", "duplicate_id", f"id {sample['id']!r} already used on line {first}"
                )
        except _Bad as bad:
            result.rejects.append(_reject(name, number, bad, text))
            continue
        first_line_of[sample["id"]] = number
        result.accepted.append(sample)
    if strict and result.rejects:
        raise StrictInputError(_strict_message(result))
    return result


def _split_lines(data: bytes) -> Iterator[tuple[int, bytes]]:
    """(1-based number, bytes) per line; a final newline starts no extra line; BOM/CR stripped."""
    if data.startswith(_BOM):
        data = data[len(_BOM) :]
    lines = data.split(b"\n")
    if lines[-1] == b"":
        lines.pop()
    for number, line in enumerate(lines, start=1):
        yield number, line[:-1] if line.endswith(b"\r") else line


def _parse_sample(text: str, fmt: str) -> dict[str, Any]:
    """JSON text of one line -> normalised sample, or _Bad naming the first defect."""
    obj = _load_object(text)
    names = {key: key for key in (*_ALPACA_FIELDS, "meta")}
    if fmt == "sharegpt" or (fmt == "auto" and is_sharegpt(obj)):
        try:
            obj, source_names = convert_sharegpt(obj)
        except FormatError as exc:
            raise _Bad(exc.field, exc.reason, exc.detail) from None
        names.update(source_names)
    return _normalise(obj, names)


def _load_object(text: str) -> dict[str, Any]:
    try:
        obj = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise _Bad(None, "invalid_json", f"invalid JSON: {exc}") from None
    if not isinstance(obj, dict):
        raise _Bad(None, "not_an_object", f"expected a JSON object, got {json_type(obj)}")
    return obj


def _check_text(value: Any, names: dict[str, str]) -> None:
    """Reject undecodable bytes and C0 control characters anywhere, naming the field."""
    for check in (_SURROGATE, _CONTROL):
        for where, text in _strings(value):
            if check.search(text):
                where = _printable(names.get(where, where))
                if check is _SURROGATE:
                    raise _Bad(where, f"not_utf8:{where}", "contains bytes that are not UTF-8")
                raise _Bad(where, f"control_chars:{where}", "contains C0 control characters")


def _normalise(obj: dict[str, Any], names: dict[str, str]) -> dict[str, Any]:
    """Validate an Alpaca-shaped object; `names` maps our fields to the source's field names."""
    for key, required in _ALPACA_FIELDS.items():
        value = obj.get(key)
        if value is None and required:
            raise _Bad(names[key], f"missing_field:{names[key]}", "required field is missing")
        if value is not None and not isinstance(value, str):
            detail = f"must be a string, got {json_type(value)}"
            raise _Bad(names[key], f"wrong_type:{names[key]}", detail)
    meta = obj.get("meta")
    if meta is not None and not isinstance(meta, dict):
        raise _Bad(names["meta"], f"wrong_type:{names['meta']}", "must be an object")
    extra = {key: value for key, value in obj.items() if key not in {*_ALPACA_FIELDS, "meta"}}
    sample = {
        "id": obj.get("id"),
        "instruction": obj["instruction"],
        "input": obj.get("input") or "",
        "output": obj["output"],
        "meta": dict(meta or {}),
    }
    if extra:  # unknown top-level keys are kept in meta.extra, not dropped
        kept = sample["meta"].get("extra")
        sample["meta"]["extra"] = {**kept, **extra} if isinstance(kept, dict) else extra
    _check_text(sample, names)
    if not sample["output"].strip():
        raise _Bad(names["output"], f"empty_field:{names['output']}", "empty or whitespace-only")
    if sample["id"] is not None and not sample["id"].strip():
        raise _Bad(names["id"], f"empty_field:{names['id']}", "empty or whitespace-only")
    if sample["id"] is None:
        sample["id"] = sample_id(sample["instruction"], sample["input"], sample["output"])
    return sample


def _strings(value: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(dotted field path, text) for every string in a sample, keys included, in field order."""
    if isinstance(value, str):
        yield where, value
    elif isinstance(value, dict):
        for key, item in value.items():
            path = f"{where}.{key}" if where else str(key)
            yield path, str(key)
            yield from _strings(item, path)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, f"{where}[{index}]")


def _printable(text: str) -> str:
    """Text safe to write as UTF-8: undecodable bytes shown as escapes."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def _reject(file: str, line: int, bad: _Bad, text: str) -> Reject:
    where = f"field {bad.field!r}" if bad.field else "whole line (no field)"
    message = f"{file}:{line}: {where}: {_printable(bad.detail)} [{bad.reason}]"
    raw = text[:RAW_LIMIT].encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    return Reject(file, line, bad.field, bad.reason, message, raw)


def _strict_message(result: ReadResult) -> str:
    shown = [
        f"  {r.file}:{r.line} {r.field or '-'} {r.reason}" for r in result.rejects[:STRICT_SHOWN]
    ]
    more = len(result.rejects) - len(shown)
    if more:
        shown.append(f"  ... and {more} more")
    head = f"{result.file}: {len(result.rejects)} of {result.lines} lines rejected (strict mode):"
    return "\n".join([head, *shown])


def write_jsonl_atomic(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write one JSON object per line atomically; returns the number of rows written.

    On any exception (including one raised by the `rows` iterator) the temp file is removed and
    the destination keeps its previous content.
    """
    count = 0

    def write(handle: Any) -> None:
        nonlocal count
        for row in rows:
            handle.write(json.dumps(row, ensure_ascii=False))
            handle.write("\n")
            count += 1

    _atomic_write(Path(path), write)
    return count


def write_json_atomic(path: str | Path, obj: Any) -> None:
    """Write one JSON document (indent 2, key order kept, trailing newline) atomically."""

    def write(handle: Any) -> None:
        handle.write(json.dumps(obj, ensure_ascii=False, indent=2, sort_keys=False))
        handle.write("\n")

    _atomic_write(Path(path), write)


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write a text file (a report page) atomically."""
    _atomic_write(Path(path), lambda handle: handle.write(text))


def write_rejects(path: str | Path, rejects: Iterable[Reject]) -> int:
    """Write Reject records as JSONL atomically; returns the count."""
    return write_jsonl_atomic(path, (reject.to_dict() for reject in rejects))


def _atomic_write(path: Path, write: Any) -> None:
    """Temp file in the same folder, fsync, os.replace; the temp file never outlives a failure."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mode = path.stat().st_mode & 0o777 if path.exists() else 0o644
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def fsync_dir(folder: Path) -> None:
    """Persist the rename itself (POSIX); Windows cannot open folders, and needs no such step."""
    if not hasattr(os, "O_DIRECTORY"):
        return
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_jsonl_trusted(path: str | Path) -> list[dict[str, Any]]:
    """Read a JSONL file cift wrote itself; blank lines skipped; ValueError names file:line."""
    rows = []
    text = Path(path).read_text(encoding="utf-8")
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ValueError(f"{path}:{number}: invalid JSON: {exc}") from exc
        if not isinstance(row, dict):
            raise ValueError(f"{path}:{number}: expected a JSON object, got {json_type(row)}")
        rows.append(row)
    return rows


class KeyedLog:
    """Append-only JSONL files of {"key", <field>} rows in `folder`, one file per name: a cache
    that survives a kill (a torn last line is ignored) and is read back as {key: value}.
    `folder=None` keeps nothing (every load is empty)."""

    def __init__(self, folder: str | Path | None, field: str, suffix: str = ".jsonl") -> None:
        self.folder = Path(folder) if folder else None
        self.field, self.suffix = field, suffix

    def path(self, name: str) -> Path | None:
        return self.folder / f"{name}{self.suffix}" if self.folder else None

    def load(self, name: str) -> dict[str, Any]:
        path, out = self.path(name), {}
        if path is None or not path.is_file():
            return out
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # the tail written when the run was killed
            out[row["key"]] = row[self.field]
        return out

    def add(self, name: str, rows: Iterable[tuple[str, Any]]) -> None:
        path, rows = self.path(name), list(rows)
        if path is None or not rows:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a", encoding="utf-8") as fh:
            for key, value in rows:
                fh.write(json.dumps({"key": key, self.field: value}, ensure_ascii=False) + "\n")

"""The one JSONL reader/writer for samples, and atomic writes every stage uses."""

from cift.io.jsonl import (
    ReadResult,
    Reject,
    StrictInputError,
    read_jsonl_trusted,
    read_samples,
    sample_id,
    write_json_atomic,
    write_jsonl_atomic,
    write_rejects,
)

__all__ = [
    "ReadResult",
    "Reject",
    "StrictInputError",
    "read_jsonl_trusted",
    "read_samples",
    "sample_id",
    "write_json_atomic",
    "write_jsonl_atomic",
    "write_rejects",
]

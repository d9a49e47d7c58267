"""Base-model identity: the weights' sha256, remembered per (path, size, mtime)."""

from __future__ import annotations

import hashlib
import os

import pytest

from cift.models import loading
from cift.models.loading import _hash_files, base_model_hash


def test_base_hash_is_the_weights_sha256_and_is_remembered(tmp_path, monkeypatch):
    monkeypatch.setenv("CIFT_CACHE_DIR", str(tmp_path / "cache"))
    _hash_files.cache_clear()
    weights = tmp_path / "model" / "model.safetensors"
    weights.parent.mkdir()
    weights.write_bytes(b"first weights")
    first = base_model_hash(weights.parent)
    assert first == hashlib.sha256(b"first weights").hexdigest()
    assert len(list((tmp_path / "cache" / "hashes").iterdir())) == 1

    _hash_files.cache_clear()  # a new process: the memo answers, the file is not read
    with monkeypatch.context() as m:
        m.setattr(loading, "open", lambda *a, **k: pytest.fail("weights re-read"), raising=False)
        assert base_model_hash(weights.parent) == first

    weights.write_bytes(b"other weights!")  # new size and mtime: hashed again
    os.utime(weights, ns=(1, 1))
    assert base_model_hash(weights.parent) == hashlib.sha256(b"other weights!").hexdigest()


def test_base_hash_needs_safetensors(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"no \.safetensors"):
        base_model_hash(tmp_path)


def test_auto_precision_follows_the_cpus_bf16_support(monkeypatch):
    """bf16 only where the CPU multiplies it fast: elsewhere it runs at a quarter of fp32's rate."""
    import torch

    from cift.models import loading

    for fast, dtype, precision in (
        (True, torch.bfloat16, "bf16-mixed"),
        (False, torch.float32, "32-true"),
    ):
        monkeypatch.setattr(loading, "cpu_has_bf16", lambda fast=fast: fast)
        assert loading.resolve_dtype("auto") == dtype
        assert loading.resolve_precision("auto", "cpu") == precision
    assert loading.resolve_precision("bf16-mixed", "cpu") == "bf16-mixed"  # as configured

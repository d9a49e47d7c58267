"""The adapter bank: importing external LoRA adapters (identity and shapes checked) and listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cift.bank.store import ImportRefused, bank, import_adapter
from cift.models import ModelSpec
from cift.registry.store import Refused, Registry
from cift.train.module import wrap_lora

LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}


def external_adapter(spec: ModelSpec, out: Path, base_path: str | None = None) -> Path:
    """A plain PEFT save (no cift metadata), as another tool would write it."""
    model = wrap_lora(spec.load(dtype="float32").model, LORA)
    model.peft_config["default"].base_model_name_or_path = base_path or str(spec.local_dir())
    model.save_pretrained(str(out), safe_serialization=True)
    return out


SPEC = ModelSpec(name="tiny", source="tiny_random")
OTHER = ModelSpec(name="other", source="tiny_random", tiny={"hidden_size": 48})


def test_import_registers_the_next_version_with_its_alias(tmp_path):
    registry = Registry(tmp_path / "registry")
    src = external_adapter(SPEC, tmp_path / "ext")
    version = import_adapter(registry, src, "cardiology", SPEC)
    assert version == "v0001" and registry.aliases()["cardiology"] == "v0001"
    rows = {r["version"]: r for r in bank(registry)}
    assert rows["v0000"]["source"] == "base" and rows["v0001"]["source"] == "imported"
    assert rows["v0001"]["base_check"] == "sha256"
    meta = json.loads((Path(rows["v0001"]["adapter_path"]) / "cift_adapter.json").read_text())
    assert meta["base_hash"] and meta["metadata"]["source"] == "imported"


def test_an_adapter_for_another_base_is_refused_with_the_reason(tmp_path):
    registry = Registry(tmp_path / "registry")
    src = external_adapter(OTHER, tmp_path / "other")
    with pytest.raises(ImportRefused, match="different base"):
        import_adapter(registry, src, "x", SPEC)
    # its base is not a local folder: only the shapes can tell, and they do
    cfg = json.loads((src / "adapter_config.json").read_text())
    cfg["base_model_name_or_path"] = "someone/else-7b"
    (src / "adapter_config.json").write_text(json.dumps(cfg))
    with pytest.raises(ImportRefused, match=r"has shape .* needs"):
        import_adapter(registry, src, "x", SPEC)
    assert [r["version"] for r in bank(registry)] == ["v0000"]  # nothing half-imported


def test_pickled_weights_are_refused(tmp_path):
    src = external_adapter(SPEC, tmp_path / "ext")
    (src / "adapter_model.bin").write_bytes(b"pickle")
    with pytest.raises(Refused, match="only safetensors"):
        import_adapter(Registry(tmp_path / "registry"), src, "x", SPEC)

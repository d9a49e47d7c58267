"""The adapter bank: importing external LoRA adapters (identity and shapes checked) and listing."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cift.bank.select import AdapterScore, score_adapters, select_group
from cift.bank.store import ImportRefused, bank, import_adapter
from cift.models import ModelSpec
from cift.registry import Refused, Registry
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


def score(name: str, acc: float | None, ppl: float | None, preds: dict) -> AdapterScore:
    return AdapterScore(name, acc, ppl, preds)


def test_selection_ranks_a_hand_built_bank():
    bank_scores = {
        "expert": score("expert", 1.0, 2.0, {"a": "flu", "b": "asthma"}),
        "twin": score("twin", 1.0, 2.1, {"a": "flu", "b": "asthma"}),  # same answers as expert
        "other": score("other", 0.5, 3.0, {"a": "flu", "b": "gout"}),  # disagrees on b
        "weak": score("weak", 0.0, 9.0, {"a": None, "b": None}),
    }
    chosen, table = select_group(bank_scores, 2, (1.0, 1.0, 0.0))
    assert chosen == ["expert", "twin"]  # no diversity term: the two best
    chosen, table = select_group(bank_scores, 2, (1.0, 1.0, 2.0))
    assert chosen == ["expert", "other"]  # diversity prefers the one that disagrees
    assert table["other"]["diversity"] == pytest.approx(0.5)
    assert select_group(bank_scores, 1, (0.0, 1.0, 0.0))[0] == ["expert"]  # lowest perplexity
    assert select_group(bank_scores, 4, (1, 0, 0))[0][-1] == "weak"
    assert table["weak"]["gold_ppl"] == 9.0


def test_gold_perplexity_prefers_the_adapter_that_learnt_the_answers(tmp_path):
    """Two adapters on the tiny model: one fitted to the K-shot answers for a few steps."""
    import torch
    from omegaconf import OmegaConf

    from cift.models.loading import base_model_hash
    from cift.train.adapters import save_adapter
    from cift.train.data import collate, tokenize_sample
    from tests.conftest import compose

    cfg = compose(["model=tiny_random", "evaluate.max_new_tokens=4", "judge=none"])
    cfg = OmegaConf.merge(cfg, {"paths": {"runs": str(tmp_path / "runs")}})
    kshot = [
        {
            "id": f"k{i}",
            "instruction": f"Patient {i} has a cough.",
            "input": "",
            "output": "1. Cough.\n2. Fever.\n3. Days.\nDiagnosis: Influenza\nAdvice: Rest.",
        }
        for i in range(3)
    ]
    loaded = SPEC.load(dtype="float32")
    folders = {}
    for name, steps in (("untrained", 0), ("fitted", 30)):
        model = wrap_lora(SPEC.load(dtype="float32").model, LORA)
        batch = collate(
            [tokenize_sample(loaded.tokenizer, s, cfg.system_prompt, 128) for s in kshot],
            loaded.tokenizer.pad_token_id,
        )
        opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
        for _ in range(steps):
            opt.zero_grad()
            model(**batch).loss.backward()
            opt.step()
        folders[name] = str(
            save_adapter(model, tmp_path / name, base_hash=base_model_hash(SPEC.local_dir()))
        )
    scores = score_adapters(cfg, folders, kshot)
    assert scores["fitted"].gold_ppl < scores["untrained"].gold_ppl
    assert select_group(scores, 1, (0, 1, 0))[0] == ["fitted"]


def test_a_bad_kshot_file_names_its_line_and_field(tmp_path):
    from cift.bank.select import kshot_examples
    from cift.io.jsonl import StrictInputError

    path = tmp_path / "kshot.jsonl"
    good = {"instruction": "Cough?", "input": "", "output": "Diagnosis: Influenza"}
    path.write_text(json.dumps(good) + "\n" + json.dumps({"instruction": "no output"}) + "\n")
    with pytest.raises(StrictInputError, match=r"kshot\.jsonl:2 output"):
        kshot_examples(path, 5, seed=0)

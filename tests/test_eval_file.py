"""`cift eval-file`, model names and `cift export merged` on a tiny random model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from omegaconf import OmegaConf

from cift.cli import main as cli_main
from cift.config import compose_config
from cift.deploy.export import export_merged
from cift.deploy.resolve import UnknownModel, resolve_model
from cift.evaluate.eval_file import usable_cases
from cift.io.jsonl import read_cases
from cift.kb.loader import load_kb
from cift.models.version import load_version
from cift.train.adapters import save_adapter
from cift.train.module import wrap_lora

BAD = Path(__file__).parent / "fixtures" / "bad_inputs"
EXPECTED = json.loads((BAD / "expected.json").read_text())


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_case_reader_passes_the_bad_input_corpus(name):
    read = read_cases(BAD / name, "instruction", "output")
    want = EXPECTED[name]
    assert (len(read.accepted), len(read.rejects), read.blank) == (
        want["accepted"],
        want["rejected"],
        want["blank"],
    )
    for reject in read.rejects:
        assert reject.message.startswith(f"{BAD / name}:{reject.line}:")


def cases_file(tmp_path: Path) -> Path:
    lines = [
        {"text": "Fever, aches and dry cough for two days.", "dx": "flu"},
        {"text": "Runny nose and sneezing.", "dx": "Martian pox"},  # unresolvable label
        {"text": "Wheeze at night.", "dx": "Bronchial asthma"},
        {"text": "Burning on passing urine.", "dx": 3},  # wrong type: rejected
        {"text": "Itchy rash.", "dx": "Common cold"},
    ]
    path = tmp_path / "cases.jsonl"
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    return path


def test_usable_cases_resolve_labels_and_limit_in_file_order(tmp_path):
    samples, counts = usable_cases(cases_file(tmp_path), "text", "dx", load_kb(), limit=2)
    assert [s["gold"] for s in samples] == ["Influenza", "Bronchial asthma"]
    assert counts["rejected"] == 1 and counts["unresolved_labels"] == 1
    assert "cases.jsonl:4: field 'dx'" in counts["rejects"][0]
    assert samples[0]["input"].startswith("Fever") and samples[0]["instruction"]


@pytest.fixture
def run_cfg(tmp_path):
    cfg = compose_config(["model=tiny_random", "evaluate.max_new_tokens=8", "judge=none"])
    cfg.paths.runs = str(tmp_path / "runs")
    cfg.evaluate.cache_dir = str(tmp_path / "cache")
    cfg.deploy.registry_dir = str(tmp_path / "registry")  # none there: run-local names
    return cfg


def make_adapter(cfg, folder: Path) -> Path:
    from hydra.utils import instantiate

    loaded = instantiate(cfg.model).load(dtype="float32")
    peft_model = wrap_lora(loaded.model, OmegaConf.to_container(cfg.train.lora))
    for name, p in peft_model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(p, std=0.05)
    return save_adapter(peft_model, folder, base_hash=loaded.base_hash, metadata={})


def test_resolve_model_names(run_cfg, tmp_path):
    runs = Path(run_cfg.paths.runs)
    assert resolve_model("base", run_cfg) == ("main/base", None)
    assert resolve_model("production", run_cfg) == ("main/base", None)  # nothing deployed yet
    adapter = make_adapter(run_cfg, runs / "main" / "versions" / "b1")
    (runs / "main" / "b1").mkdir(parents=True)
    pointer = {"version": "main/b1", "adapter_path": str(adapter), "decision": "promote"}
    (runs / "main" / "b1" / "deployed.json").write_text(json.dumps(pointer))
    assert resolve_model("production", run_cfg) == ("main/b1", str(adapter))
    assert resolve_model("main/b1", run_cfg) == ("main/b1", str(adapter))
    assert resolve_model(str(adapter), run_cfg)[1] == str(adapter)
    for bad in ("main/b9", "../etc", "main/..", "nope"):
        with pytest.raises(UnknownModel):
            resolve_model(bad, run_cfg)


def test_registry_names_win_when_a_registry_exists(run_cfg, tmp_path):
    from cift.registry import Registry

    registry = Registry(tmp_path / "reg")
    vid = registry.register(make_adapter(run_cfg, tmp_path / "a1"), {"batch": "b1"})
    registry.promote(vid)
    name, adapter = resolve_model("production", run_cfg, tmp_path / "reg")
    assert name == vid and Path(adapter) == registry.version_dir(vid)
    assert resolve_model("v0000", run_cfg, tmp_path / "reg") == ("v0000", None)
    assert resolve_model("production", run_cfg) == ("main/base", None)  # no registry there


def test_export_merged_matches_the_adapter(run_cfg, tmp_path):
    from hydra.utils import instantiate
    from transformers import AutoModelForCausalLM

    adapter = make_adapter(run_cfg, tmp_path / "adapter")
    result = export_merged(run_cfg, str(adapter), tmp_path / "merged")
    assert result["adapter"] == str(adapter)
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged").eval()
    reference = load_version(instantiate(run_cfg.model), str(adapter), dtype="float32").model
    ids = torch.tensor([[1, 42, 7, 99, 12]])
    with torch.no_grad():
        torch.testing.assert_close(merged(ids).logits, reference(ids).logits)
    with pytest.raises(FileExistsError):
        export_merged(run_cfg, str(adapter), tmp_path / "merged")


def test_eval_file_command_prints_the_result_line(tmp_path, capsys):
    args = ["eval-file", str(cases_file(tmp_path)), "--text-field", "text", "--label-field", "dx"]
    sets = ["-S", "model=tiny_random", "-S", "evaluate.max_new_tokens=8"]
    sets += ["-S", f"evaluate.cache_dir={tmp_path / 'cache'}", "-S", f"paths.runs={tmp_path}"]
    sets += ["-S", f"deploy.registry_dir={tmp_path / 'registry'}"]
    with pytest.raises(SystemExit) as exit_:
        cli_main([*args, "--model", "base", "--limit", "2", *sets])
    assert exit_.value.code == 0
    out = capsys.readouterr()
    line = json.loads(out.out.strip().splitlines()[-1])
    assert set(line) == {
        "n",
        "accuracy",
        "accuracy_ci",
        "ranked_accuracy",
        "ranked_accuracy_ci",
        "top3",
        "top3_ci",
        "mrr",
        "mrr_ci",
        "fault_cases",
        "fault_rate",
        "rejected",
        "unresolved_labels",
        "model",
    }
    assert (line["n"], line["rejected"], line["unresolved_labels"]) == (2, 1, 1)
    assert line["model"] == "main/base" and 0.0 <= line["accuracy"] <= 1.0
    # the ranked score is a real figure even for an answer that states no diagnosis
    assert 0.0 <= line["ranked_accuracy"] <= line["top3"] <= 1.0 and 0.0 < line["mrr"] <= 1.0
    assert 0.0 <= line["fault_rate"] <= 1.0
    assert "cases.jsonl:4" in out.err
    with pytest.raises(SystemExit) as exit_:
        cli_main([*args, "--model", "main/b7", *sets])
    assert exit_.value.code == 1

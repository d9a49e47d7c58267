"""cift.train on a tiny random model: loss mask, replay mix, batches, adapters, fit and resume."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import pytest
import torch

from cift.models.loading import ModelSpec
from cift.models.version import apply_adapter
from cift.train.adapters import (
    AdapterError,
    init_from_adapter,
    read_adapter_meta,
    save_adapter,
)
from cift.train.data import (
    IGNORE,
    EmptyResponseMaskError,
    LengthGroupedBatchSampler,
    collate,
    mix_replay,
    tokenize_sample,
    tokenize_samples,
)
from cift.train.fit import epochs_and_max_steps, planned_steps, train_adapter
from cift.train.module import lr_lambda, supervised_loss, wrap_lora

SYSTEM = "You are an experienced physician."
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
TRAINER = {
    "_target_": "lightning.Trainer",
    "accelerator": "cpu",
    "devices": 1,
    "precision": "bf16-mixed",
    "gradient_clip_val": 1.0,
    "enable_model_summary": False,
    "enable_progress_bar": False,
}


@pytest.fixture(scope="module")
def spec() -> ModelSpec:
    return ModelSpec(name="tiny", source="tiny_random")


@pytest.fixture(scope="module")
def tokenizer(spec):
    return spec.load(dtype="float32").tokenizer


def _samples(n: int, prefix: str = "d", words: int = 3) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "instruction": f"Question {i}: what is wrong?",
            "input": "fever and cough " * (i % 4),
            "output": "1. Step one.\nDiagnosis: flu\nAdvice: rest " + "well " * (words + i % 5),
        }
        for i in range(n)
    ]


def _cfg(**over) -> dict:
    cfg = {
        "init": "production",
        "mix_ratio": 1.0,
        "lora": LORA,
        "epochs": 2,
        "lr": 5e-3,
        "warmup_ratio": 0.1,
        "weight_decay": 0.0,
        "batch_size": 4,
        "max_length": 96,
        "ckpt_every_n_steps": 1,
    }
    return {**cfg, **over}


def _logits(model, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(input_ids=ids).logits


def _randomise_lora(peft_model, seed: int = 0) -> None:
    """Non-zero B matrices so an adapter actually changes the logits."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in peft_model.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=gen) * 0.05)


# ------------------------------------------------------------------ data


def test_loss_mask_supervises_response_and_end_of_turn(tokenizer):
    sample = _samples(1)[0]
    ex = tokenize_sample(tokenizer, sample, SYSTEM, 512)
    n_prompt = ex.labels.index(next(x for x in ex.labels if x != IGNORE))
    assert all(x == IGNORE for x in ex.labels[:n_prompt])
    prompt = tokenizer.decode(ex.input_ids[:n_prompt])
    assert SYSTEM in prompt and "Question 0" in prompt and prompt.endswith("assistant\n")
    supervised = [x for x in ex.labels if x != IGNORE]
    assert supervised == ex.input_ids[n_prompt:]
    assert supervised[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert tokenizer.decode(supervised[:-1]) == sample["output"]
    assert not ex.truncated


def test_empty_response_mask_raises(tokenizer):
    with pytest.raises(EmptyResponseMaskError, match="d0"):
        tokenize_sample(tokenizer, {**_samples(1)[0], "output": "  "}, SYSTEM, 512)
    ex = tokenize_sample(tokenizer, _samples(1)[0], SYSTEM, 512)
    ex.labels = [IGNORE] * len(ex.labels)
    with pytest.raises(EmptyResponseMaskError, match="zero supervised"):
        collate([ex], pad_id=2)


def test_truncation_cuts_prompt_left_then_response_right(tokenizer):
    long_prompt = {**_samples(1)[0], "input": "headache " * 200}
    full = tokenize_sample(tokenizer, long_prompt, SYSTEM, 4096)
    ex = tokenize_sample(tokenizer, long_prompt, SYSTEM, 128)
    assert ex.truncated and len(ex.input_ids) == 128
    assert [x for x in ex.labels if x != IGNORE] == [x for x in full.labels if x != IGNORE]
    assert ex.input_ids[-10:] == full.input_ids[-10:]  # the left of the prompt went first
    long_answer = {**_samples(1)[0], "output": "word " * 400}
    ex = tokenize_sample(tokenizer, long_answer, SYSTEM, 128)
    full = tokenize_sample(tokenizer, long_answer, SYSTEM, 4096)
    assert ex.truncated and len(ex.input_ids) == 128
    assert ex.input_ids == full.input_ids[:128]  # prompt kept (< half), answer cut at the right


def test_mix_replay_ratio_and_replacement():
    dom, rep = _samples(10), _samples(30, "r")
    mixed, flags, counts = mix_replay(dom, rep, 1.0, seed=1)
    assert len(mixed) == 20 and sum(flags) == 10 and mixed[:10] == dom
    assert counts["replay"] == 10 and not counts["with_replacement"]
    assert mix_replay(dom, rep, 1.0, seed=1)[0] == mixed  # seeded
    assert mix_replay(dom, rep, 0.5, seed=1)[2]["replay"] == 5
    assert mix_replay(dom, rep, 0.0, seed=1)[0] == dom
    few = _samples(4, "r")
    mixed, flags, counts = mix_replay(dom, few, 1.0, seed=1)
    assert counts["replay"] == 10 and counts["with_replacement"] and counts["replay_unique"] == 4
    assert all(s in mixed for s in few)  # every replay sample used before repeats
    with pytest.raises(ValueError, match="replay"):
        mix_replay(dom, [], 1.0, seed=1)


def test_length_grouped_batches_are_reproducible_and_tight():
    import random

    lengths = [random.Random(i).randint(64, 512) for i in range(400)]
    sampler = LengthGroupedBatchSampler(lengths, 8, seed=3)
    epoch0 = sampler.batches(0)
    assert epoch0 == LengthGroupedBatchSampler(lengths, 8, seed=3).batches(0)
    assert epoch0 != sampler.batches(1)
    assert sorted(i for b in epoch0 for i in b) == list(range(400)) and len(sampler) == 50

    def waste(batches):
        padded = sum(max(lengths[i] for i in b) * len(b) for b in batches)
        return 1 - sum(lengths) / padded

    shuffled = list(range(400))
    random.Random(0).shuffle(shuffled)
    assert waste(epoch0) < 0.08 < 0.2 < waste([shuffled[i : i + 8] for i in range(0, 400, 8)])
    sampler.resume(1, 3)
    assert list(sampler) == sampler.batches(1)[3:]
    ranks = [LengthGroupedBatchSampler(lengths, 8, 3, rank=r, world_size=3) for r in range(3)]
    assert len({len(r.batches(0)) for r in ranks}) == 1 and len(ranks[0]) == 16


def test_lr_schedule_warms_up_then_decays():
    f = lr_lambda(2, 10, "linear")
    assert f(0) < f(1) < f(2) == 1.0 and f(10) == 0.0
    assert lr_lambda(0, 10, "cosine")(5) == pytest.approx(0.5)


def test_head_on_supervised_positions_matches_full_loss(spec, tokenizer):
    loaded = spec.load(dtype="float32")
    peft_model = wrap_lora(loaded.model, LORA)
    batch = collate(tokenize_samples(tokenizer, _samples(4), SYSTEM, 96), tokenizer.pad_token_id)
    fast, n = supervised_loss(peft_model, batch)
    full, _ = supervised_loss(peft_model, batch, head_on_supervised=False)
    ref = peft_model(**batch).loss  # transformers' own full-vocabulary loss
    assert n == int((batch["labels"][:, 1:] != IGNORE).sum())
    assert fast.item() == pytest.approx(full.item(), rel=1e-5)
    assert fast.item() == pytest.approx(ref.item(), rel=1e-5)


# ------------------------------------------------------------------ adapters


def test_adapter_round_trip_and_merge_give_identical_logits(spec, tmp_path):
    loaded = spec.load(dtype="float32")
    peft_model = wrap_lora(loaded.model, LORA)
    _randomise_lora(peft_model)
    peft_model.eval()
    ids = torch.tensor([[1, 42, 7, 99, 3000, 12]])
    expected = _logits(peft_model, ids)
    out = save_adapter(peft_model, tmp_path / "v1", base_hash=loaded.base_hash, metadata={"a": 1})
    assert {p.name for p in out.iterdir()} >= {
        "adapter_config.json",
        "adapter_model.safetensors",
        "cift_adapter.json",
    }
    assert read_adapter_meta(out) == {"base_hash": loaded.base_hash, "metadata": {"a": 1}}
    assert not list(tmp_path.glob(".v1*"))  # no temp folders left

    again = apply_adapter(spec.load(dtype="float32").model, out, loaded.base_hash, merge=False)
    assert torch.equal(_logits(again, ids), expected)
    merged = again.merge_and_unload()
    torch.testing.assert_close(_logits(merged, ids), expected, rtol=1e-4, atol=1e-4)


def test_base_hash_mismatch_and_shape_mismatch_raise(spec, tmp_path):
    loaded = spec.load(dtype="float32")
    peft_model = wrap_lora(loaded.model, LORA)
    out = save_adapter(peft_model, tmp_path / "v1", base_hash="0" * 64)
    with pytest.raises(AdapterError, match="different model"):
        apply_adapter(spec.load(dtype="float32").model, out, loaded.base_hash, merge=False)
    with pytest.raises(AdapterError, match="different model"):
        init_from_adapter(peft_model, out, expected_base_hash=loaded.base_hash)
    other = wrap_lora(spec.load(dtype="float32").model, {**LORA, "r": 8})
    with pytest.raises(AdapterError, match="r=4"):
        init_from_adapter(other, out)
    (out / "adapter_model.safetensors").unlink()
    with pytest.raises(AdapterError, match="safetensors"):
        apply_adapter(spec.load(dtype="float32").model, out, None, merge=False)


def test_init_from_production_reproduces_its_logits(spec, tmp_path):
    loaded = spec.load(dtype="float32")
    production = wrap_lora(loaded.model, LORA)
    _randomise_lora(production, seed=5)
    production.eval()
    ids = torch.tensor([[1, 5, 9, 200, 17]])
    expected = _logits(production, ids)
    out = save_adapter(production, tmp_path / "prod", base_hash=loaded.base_hash)
    torch.manual_seed(123)
    fresh = wrap_lora(spec.load(dtype="float32").model, LORA).eval()
    assert not torch.equal(_logits(fresh, ids), expected)
    init_from_adapter(fresh, out, expected_base_hash=loaded.base_hash)
    assert torch.equal(_logits(fresh, ids), expected)


# ------------------------------------------------------------------ fit


def _fit(spec, tmp_path: Path, name: str, **kw) -> dict:
    args = {"init_adapter": None, "seed": 7, "callbacks": None, "cfg": _cfg()}
    args.update(kw)
    return train_adapter(
        args.pop("cfg"),
        TRAINER,
        spec,
        _samples(12),
        _samples(5, "r", words=1),
        system_prompt=SYSTEM,
        out_dir=tmp_path / name,
        ckpt_dir=tmp_path / f"{name}-ckpt",
        **args,
    )


def _adapter_tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "adapter_model.safetensors"))


def test_fit_summary_counts_every_non_padding_token(spec, tokenizer, tmp_path):
    summary = _fit(spec, tmp_path, "v1")
    mixed, flags, _ = mix_replay(_samples(12), _samples(5, "r", words=1), 1.0, 7)
    examples = tokenize_samples(tokenizer, mixed, SYSTEM, 96, replay_flags=flags)
    assert summary["n"] == 12 and summary["replay"] == 12
    assert summary["train_tokens"] == 2 * sum(len(e.input_ids) for e in examples)
    assert summary["supervised_tokens"] == 2 * sum(e.n_supervised for e in examples)
    assert summary["optimizer_steps"] == 2 * 6
    assert summary["tokens_per_s"] == pytest.approx(
        summary["train_tokens"] / summary["wall_seconds"], rel=1e-2
    )
    assert summary["final_loss"] > 0 and summary["init"] == "fresh"
    meta = read_adapter_meta(tmp_path / "v1")
    assert meta["metadata"]["train"]["train_tokens"] == summary["train_tokens"]
    assert not (tmp_path / "v1-ckpt").exists()  # checkpoints removed once the adapter is saved

    # the next version starts from this one (train.init=production)
    nxt = _fit(spec, tmp_path, "v2", init_adapter=tmp_path / "v1", cfg=_cfg(epochs=1))
    assert nxt["init"] == "production" and nxt["optimizer_steps"] == 6


def test_epochs_and_max_steps_from_min_steps():
    assert epochs_and_max_steps(6, 2, None) == (2, -1)  # null: the epochs decide
    assert epochs_and_max_steps(6, 2, 12) == (2, -1)  # the epochs already give enough
    assert epochs_and_max_steps(6, 2, 13) == (3, 13)  # one more epoch, stopped at 13
    assert epochs_and_max_steps(2, 1, 7) == (4, 7)
    with pytest.raises(ValueError, match="min_steps"):
        epochs_and_max_steps(0, 1, 3)


def test_min_steps_trains_a_small_selection_for_a_large_ones_steps(spec, tmp_path):
    """Table 1's equal-compute arm: 4 samples trained for the optimizer steps that 12 take."""
    full_steps = planned_steps(12, _cfg(epochs=1), TRAINER)
    assert full_steps == 6  # 12 domain + 12 replay samples in batches of 4
    cfg = _cfg(epochs=1, min_steps=full_steps)
    assert (
        planned_steps(4, cfg, TRAINER) == full_steps
        and planned_steps(4, _cfg(epochs=1), TRAINER) == 2
    )
    summary = train_adapter(
        cfg,
        TRAINER,
        spec,
        _samples(4),
        _samples(5, "r", words=1),
        system_prompt=SYSTEM,
        out_dir=tmp_path / "small",
        ckpt_dir=tmp_path / "small-ckpt",
        init_adapter=None,
        seed=7,
    )
    assert summary["optimizer_steps"] == full_steps and summary["epochs"] == 3
    assert summary["min_steps"] == full_steps and summary["n"] == 4
    # stopped mid-epoch at the count: 7 steps on 2 batches per epoch
    partial = _fit(spec, tmp_path, "partial", cfg=_cfg(epochs=1, min_steps=7))
    assert partial["optimizer_steps"] == 7 and partial["epochs"] == 2


class _KillAt(L.Callback):
    """Simulates a killed process: raises before the given optimizer step starts."""

    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_start(self, trainer, *args) -> None:
        if trainer.global_step == self.step:
            raise RuntimeError("killed")


class _FirstStep(L.Callback):
    def on_train_batch_start(self, trainer, *args) -> None:
        self.first = getattr(self, "first", trainer.global_step)


# mid-epoch, and exactly at the epoch boundary (slow: two more fits)
@pytest.mark.parametrize("kill_at", [3, pytest.param(6, marks=pytest.mark.slow)])
def test_killed_fit_resumes_from_last_checkpoint(spec, tmp_path, kill_at):
    whole = _fit(spec, tmp_path, "whole")
    with pytest.raises(RuntimeError, match="killed"):
        _fit(spec, tmp_path, "resumed", callbacks=[_KillAt(kill_at)])
    ckpt = torch.load(tmp_path / "resumed-ckpt" / "last.ckpt", weights_only=False)
    assert ckpt["global_step"] == kill_at
    assert all("lora_" in k for k in ckpt["state_dict"])  # adapter tensors only
    first = _FirstStep()
    resumed = _fit(spec, tmp_path, "resumed", callbacks=[first])
    assert resumed["resumed"] and first.first == kill_at
    for key in ("optimizer_steps", "train_tokens", "supervised_tokens"):
        assert resumed[key] == whole[key], key
    assert resumed["final_loss"] == pytest.approx(whole["final_loss"], rel=1e-3)
    a, b = _adapter_tensors(tmp_path / "whole"), _adapter_tensors(tmp_path / "resumed")
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=1e-3, atol=1e-5)


def test_stale_checkpoint_from_other_inputs_is_not_resumed(spec, tmp_path):
    with pytest.raises(RuntimeError, match="killed"):
        _fit(spec, tmp_path, "v", callbacks=[_KillAt(2)])
    summary = _fit(spec, tmp_path, "v", cfg=_cfg(epochs=1, lr=1e-3))
    assert not summary["resumed"] and summary["optimizer_steps"] == 6
    assert json.loads((tmp_path / "v" / "cift_adapter.json").read_text())["base_hash"]

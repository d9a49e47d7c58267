"""Mixture of LoRA experts: gates, exactness against a single expert, save/load, router fit."""

from __future__ import annotations

import copy

import pytest
import torch

from cift.bank.moe import train_router
from cift.models import ModelSpec
from cift.models.moe import (
    attach_moe,
    build_moe,
    expert_tensors,
    fix_router,
    is_moe,
    moe_layers,
    record_gates,
    routing_stats,
    save_moe,
)
from cift.train.module import wrap_lora

SPEC = ModelSpec(name="tiny", source="tiny_random")
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
SAMPLES = [
    {
        "id": f"s{i}",
        "instruction": f"Patient {i} coughs.",
        "input": "",
        "output": "1. Cough.\n2. Fever.\n3. Days.\nDiagnosis: Influenza\nAdvice: Rest.",
    }
    for i in range(4)
]


@pytest.fixture(scope="module")
def experts(tmp_path_factory):
    """Three saved PEFT adapters with different random B matrices (so they differ)."""
    out = []
    for i in range(3):
        torch.manual_seed(100 + i)
        model = wrap_lora(SPEC.load(dtype="float32").model, LORA)
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.data.normal_(0, 0.05)
        folder = tmp_path_factory.mktemp(f"expert{i}")
        model.save_pretrained(str(folder), safe_serialization=True)
        out.append((folder, model))
    return out


def moe(experts, top_k=2):
    loaded = SPEC.load(dtype="float32")
    build_moe(loaded.model, [expert_tensors(f) for f, _ in experts], top_k=top_k, seed=0)
    return loaded.model.eval(), loaded.tokenizer


def ids(tokenizer):
    return tokenizer(["the patient has a cough and fever"], return_tensors="pt")["input_ids"]


def test_gates_sum_to_one_with_k_nonzero_per_token(experts):
    model, _ = moe(experts, top_k=2)
    layer = moe_layers(model)[0]
    x = torch.randn(2, 5, layer.base.in_features)
    g = layer.gates(x)
    assert g.shape == (2, 5, 3)
    torch.testing.assert_close(g.sum(-1), torch.ones(2, 5))
    assert ((g > 0).sum(-1) == 2).all()


def test_a_router_fixed_to_one_expert_reproduces_that_expert_exactly(experts):
    model, tok = moe(experts)
    x = ids(tok)
    for j, (_, peft_model) in enumerate(experts):
        fix_router(model, j)
        with torch.no_grad():
            ours = model(input_ids=x).logits
            theirs = peft_model.eval()(input_ids=x).logits
        assert torch.equal(ours, theirs), (j, (ours - theirs).abs().max())


def test_saved_moe_loads_back_with_identical_logits(experts, tmp_path):
    model, tok = moe(experts)
    folder = save_moe(model, tmp_path / "moe", {"top_k": 2, "experts": ["a", "b", "c"]}, "h")
    assert is_moe(folder) and not is_moe(experts[0][0])
    again = attach_moe(SPEC.load(dtype="float32").model, folder).eval()
    x = ids(tok)
    with torch.no_grad():
        torch.testing.assert_close(model(input_ids=x).logits, again(input_ids=x).logits)


def test_router_training_moves_only_the_router_and_records_routing(experts):
    model, tok = moe(experts)
    before = copy.deepcopy({k: v.clone() for k, v in model.state_dict().items()})
    summary = train_router(model, tok, SAMPLES, "sys", epochs=2, lr=1e-2, batch_size=2)
    assert summary["steps"] == 4 and summary["final_lm_loss"] > 0
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(k.endswith("router.weight") for k in changed)
    record_gates(model, True)
    with torch.no_grad():
        model(input_ids=ids(tok))
    stats = routing_stats(model)
    assert 0 < stats["routing_entropy"] <= torch.log(torch.tensor(3.0)).item() + 1e-6
    assert sum(stats["expert_load"]) == pytest.approx(1.0)


def test_split_table_against_the_best_expert():
    from cift.bank.evaluate import bwt, split_table

    experts = {
        "e1": {"a": True, "b": True, "c": False, "d": False},  # best overall (0.5)
        "e2": {"a": True, "b": False, "c": True, "d": False},
    }
    moe = {"a": True, "b": True, "c": True, "d": False}
    table = split_table(experts, moe)
    assert table["best_expert"] == "e1"
    assert table["all_correct"] == {"n": 1, "moe_accuracy": 1.0, "best_expert_accuracy": 1.0}
    assert table["all_incorrect"] == {"n": 1, "moe_accuracy": 0.0, "best_expert_accuracy": 0.0}
    assert table["mixed"] == {"n": 2, "moe_accuracy": 1.0, "best_expert_accuracy": 0.5}
    assert table["overall"]["moe"] == 0.75
    assert bwt([0.5, 0.4, 0.9], [0.6, 0.4, 0.9]) == pytest.approx(-0.05)


def test_the_mixture_equals_the_gated_sum_of_the_experts(experts):
    """The fused forward (one matmul over every expert's rank) = Σ_e g_e · s_e · B_e A_e x."""
    model, _ = moe(experts, top_k=2)
    layer = moe_layers(model)[0]
    with torch.no_grad():
        layer.router.weight.normal_(0, 1.0)
        x = torch.randn(2, 3, layer.base.in_features)
        g = layer.gates(x)
        expected = layer.base(x)
        for e in range(3):
            expected = (
                expected + g[..., e : e + 1] * (x @ layer.A[e].T @ layer.B[e].T) * layer.scaling[e]
            )
        torch.testing.assert_close(layer(x), expected, rtol=1e-5, atol=1e-6)

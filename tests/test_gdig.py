"""G-DIG: per-sample gradient sketches from batched backward passes, and influence scores."""

from __future__ import annotations

import numpy as np
import pytest

from cift.filters.base import FilterContext
from cift.filters.gdig import GDIGFilter
from cift.models import ModelSpec
from cift.scoring.gradients import gradient_sketches
from cift.train.data import tokenize_sample
from cift.train.module import wrap_lora

SYSTEM = "You are a physician."
SEED = {
    "id": "seed",
    "instruction": "Cough and fever for three days. What is the most likely diagnosis?",
    "input": "",
    "output": "1. Fever.\n2. Cough.\n3. Three days.\nDiagnosis: Influenza\nAdvice: Rest.",
}
REPEAT = {**SEED, "id": "repeat"}
CORRUPT = {**SEED, "id": "corrupt", "output": "zq xv ## 77 ~~ wobble plinth !! " * 3}


@pytest.fixture(scope="module")
def proxy():
    spec = ModelSpec(name="tiny", source="tiny_random")
    loaded = spec.load(dtype="float32")
    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    model = wrap_lora(loaded.model, lora)
    for name, p in model.named_parameters():  # a trained adapter: B non-zero, A gets gradient
        if "lora_B" in name:
            p.data.normal_(0, 0.02)
    return spec, model, loaded.tokenizer


def test_batched_sketches_equal_one_sample_at_a_time(proxy):
    _, model, tok = proxy
    examples = [tokenize_sample(tok, s, SYSTEM, 256) for s in (SEED, CORRUPT, REPEAT)]
    together = gradient_sketches(model, examples, tok.pad_token_id, dim=64, seed=1, batch_size=3)
    alone = np.concatenate(
        [gradient_sketches(model, [e], tok.pad_token_id, dim=64, seed=1) for e in examples]
    )
    np.testing.assert_allclose(together, alone, rtol=1e-3, atol=1e-6)
    np.testing.assert_allclose(together[0], together[2], rtol=1e-4, atol=1e-7)  # same sample
    assert np.abs(together).sum() > 0


def test_repeat_of_a_seed_scores_above_a_corrupted_answer(proxy, monkeypatch):
    spec, model, tok = proxy
    step = GDIGFilter(n_seed=1, dim=64, keep="top", top_k=1, clusters=1)
    monkeypatch.setattr(step, "seed_set", lambda samples, ctx: ([SEED], set()))
    monkeypatch.setattr(step, "load_proxy", lambda ctx: (model, tok))
    pool = [CORRUPT, REPEAT]
    stats = {s["id"]: {"flags": []} for s in pool}
    dropped = step.apply(pool, stats, FilterContext(system_prompt=SYSTEM, proxy=spec, n_in=2))
    assert stats["repeat"]["gdig"] > stats["corrupt"]["gdig"]
    assert stats["repeat"]["gdig"] == pytest.approx(1.0, abs=1e-3)  # normalised: itself
    assert dropped == {"corrupt": "not_selected"}


def test_seed_set_is_held_aside_and_uses_the_reference_answer():
    samples = [{**SEED, "id": f"s{i}", "meta": {"record_id": f"r{i}"}} for i in range(6)]
    ctx = FilterContext(seed=5, extra={"reference": lambda s: {**s, "output": "KB answer"}})
    seeds, taken = GDIGFilter(n_seed=2).seed_set(samples, ctx)
    assert len(taken) == 2 and {s["id"] for s in seeds} == taken
    assert all(s["output"] == "KB answer" for s in seeds)
    assert GDIGFilter(n_seed=2).seed_set(samples, ctx)[1] == taken  # seeded


def test_cluster_spread_takes_the_best_of_each_cluster():
    grads = np.array([[1, 0], [0.9, 0.1], [0, 1], [0.1, 0.9]], dtype=np.float32)
    score = np.array([0.9, 0.8, 0.5, 0.4])
    chosen = GDIGFilter(clusters=2).spread(grads, score, [0, 1, 2, 3], wanted=2, seed=0)
    assert sorted(chosen) == [0, 2]


def test_bad_options_are_config_errors():
    with pytest.raises(ValueError, match="hessian"):
        GDIGFilter(hessian="kfac-ish")
    with pytest.raises(ValueError, match="keep"):
        GDIGFilter(keep="all")

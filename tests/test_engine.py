"""cift.models on a tiny random model: versions (base-hash check, merged ≡ unmerged) and the
shared Generator (per-row limits and stops, a batch ≡ its rows one by one)."""

from __future__ import annotations

import copy

import pytest
import torch

from cift.models import ModelSpec
from cift.models.adapter_format import AdapterError, read_adapter_meta
from cift.models.generator import Generator
from cift.models.sampling import Sampling
from cift.models.version import load_version, merge_lora_into
from cift.train.adapters import save_adapter
from cift.train.module import wrap_lora

SPEC = ModelSpec(name="tiny", source="tiny_random")
LORA = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj", "down_proj"]}
PROMPTS = ["x " * n for n in (1, 9, 3, 14, 6)]


@pytest.fixture(scope="module")
def adapter(tmp_path_factory):
    """A LoRA with non-zero B (so it changes the logits) on the tiny base, and a copy of it
    recorded against another base."""
    out = tmp_path_factory.mktemp("versions")
    loaded = SPEC.load(dtype="float32")
    model = wrap_lora(loaded.model, LORA)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0.0, 0.05)
    good = save_adapter(model, out / "good", base_hash=loaded.base_hash)
    wrong = save_adapter(model, out / "wrong", base_hash="0" * 64)
    return {"good": good, "wrong": wrong, "base_hash": loaded.base_hash}


@pytest.fixture(scope="module")
def generator() -> Generator:
    loaded = SPEC.load(dtype="float32")
    return Generator(loaded.model, loaded.tokenizer, batch_size=2)


def _ids(gen: Generator, texts: list[str]) -> list[list[int]]:
    return [gen.tokenizer(t)["input_ids"] for t in texts]


def test_a_version_trained_on_another_base_is_refused(adapter):
    assert read_adapter_meta(adapter["good"])["base_hash"] == adapter["base_hash"]
    for merge in (True, False):
        with pytest.raises(AdapterError, match="different model"):
            load_version(SPEC, adapter["wrong"], merge=merge, dtype="float32")


def test_merged_and_unmerged_versions_give_the_same_logits(adapter):
    ids = torch.tensor([[1, 5, 9, 42, 7, 3]])
    merged = load_version(SPEC, adapter["good"], dtype="float32")
    peft = load_version(SPEC, adapter["good"], merge=False, dtype="float32")
    base = load_version(SPEC, None, dtype="float32")
    assert type(peft.model).__name__ == "PeftModelForCausalLM" and merged.adapter is not None
    with torch.no_grad():
        a, b, c = (v.model(input_ids=ids).logits for v in (merged, peft, base))
    torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    assert not torch.allclose(a, c, atol=1e-3)  # the adapter does change the model


def test_fast_merge_is_peft_merge_bit_for_bit_in_bfloat16(adapter):
    from peft import PeftModel

    base = SPEC.load(dtype="bfloat16").model
    ours = copy.deepcopy(base)
    assert merge_lora_into(ours, adapter["good"])
    theirs = PeftModel.from_pretrained(copy.deepcopy(base), str(adapter["good"]))
    theirs = dict(theirs.merge_and_unload().named_parameters())
    for name, param in ours.named_parameters():
        assert torch.equal(param, theirs[name]), name


def test_each_row_keeps_its_own_token_limit(generator):
    ids = _ids(generator, PROMPTS)
    rows = [Sampling(max_new_tokens=n) for n in (2, 7, 1, 5, 12)]
    out = generator.generate(ids, rows)
    alone = [generator.generate([i], Sampling(max_new_tokens=12))[0] for i in ids]
    for o, a, s in zip(out, alone, rows, strict=True):
        assert o.completion_tokens <= s.max_new_tokens and o.prompt_tokens > 0
        if o.finish_reason == "length":  # a prefix of the unconstrained greedy answer
            assert o.completion_tokens == s.max_new_tokens and a.text.startswith(o.text)
    with pytest.raises(ValueError, match="share"):
        generator.generate(ids[:2], [Sampling(), Sampling(temperature=0.7)])


def test_a_batch_equals_its_rows_one_by_one_when_greedy(generator):
    ids = _ids(generator, PROMPTS)
    sampling = Sampling(max_new_tokens=10)
    batched = generator.generate(ids, sampling)
    alone = [generator.generate([i], sampling)[0] for i in ids]
    assert [o.text for o in batched] == [a.text for a in alone]
    assert [o.completion_tokens for o in batched] == [a.completion_tokens for a in alone]
    in_order = generator.generate(ids, sampling, sort=False)
    assert [o.text for o in in_order] == [a.text for a in alone]


def test_stops_are_per_row_and_cut_from_the_text(generator):
    ids = _ids(generator, PROMPTS[:3])
    free = generator.generate(ids, Sampling(max_new_tokens=12))
    text = free[0].text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    assert stop and free[0].finish_reason == "length"
    rows = [Sampling(max_new_tokens=12, stop=(stop,)), Sampling(max_new_tokens=12)]
    rows.append(Sampling(max_new_tokens=3))
    out = generator.generate(ids, rows)
    assert out[0].text == text[: text.find(stop)] and out[0].finish_reason == "stop"
    assert out[0].completion_tokens < free[0].completion_tokens
    assert out[1].text == free[1].text  # its neighbour's stop does not end it
    assert out[2].completion_tokens <= 3 and free[2].text.startswith(out[2].text)


def test_sampling_is_seeded_per_batch(generator):
    ids = _ids(generator, PROMPTS)
    sampling = Sampling(max_new_tokens=6, temperature=1.0, top_p=0.95, seed=3)
    first = generator.generate(ids, sampling)
    assert [o.text for o in generator.generate(ids, sampling)] == [o.text for o in first]
    other = generator.generate(ids, Sampling(max_new_tokens=6, temperature=1.0, seed=4))
    assert [o.text for o in other] != [o.text for o in first]

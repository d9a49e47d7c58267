"""The IFD engine: agreement with the reference loop, truncation, templates, order independence,
the `cift score ifd` command; and (slow) the paper's verdicts on the embedded model."""

from __future__ import annotations

import copy
import json
import random

import pytest

from cift.scoring.ifd import (
    FLAG_TRUNC_INSTRUCTION,
    FLAG_TRUNC_RESPONSE,
    RESPONSE_RESERVE,
    IFDEngine,
    PromptBuilder,
    score_ifd,
)
from cift.scoring.reference import reference_scores

SYSTEM = "You are an experienced physician. Answer carefully."


def _rel(a: float, b: float) -> float:
    return abs(a - b) / abs(b)


@pytest.fixture(scope="module")
def tiny():
    """(fp32 model, bf16 model, tokenizer) of the 2-layer random model."""
    import torch

    from cift.models.loading import ModelSpec

    loaded = ModelSpec(name="t", source="tiny_random").load(dtype="float32")
    bf16 = copy.deepcopy(loaded.model).to(torch.bfloat16).eval()
    return loaded.model, bf16, loaded.tokenizer


def _samples(n: int = 12, seed: int = 0) -> list[dict]:
    rng = random.Random(seed)
    words = "the patient reports fever cough pain since two days and a rash on the left arm"
    words = words.split(" ")
    out = []
    for i in range(n):
        instr = " ".join(rng.choice(words) for _ in range(rng.randint(3, 40)))
        inp = " ".join(rng.choice(words) for _ in range(rng.randint(0, 30)))
        resp = " ".join(rng.choice(words) for _ in range(rng.randint(1, 90)))
        out.append({"id": f"s{i}", "instruction": instr, "input": inp, "output": resp + "."})
    return out


@pytest.mark.parametrize("template", ["chat", "raw"])
def test_engine_matches_reference_fp32_and_bf16(tiny, template):
    fp32, bf16, tok = tiny
    samples = _samples()
    kw = {"system_prompt": SYSTEM, "template": template, "max_length": 256}
    ref = reference_scores(fp32, tok, samples, **kw)
    eng32 = score_ifd(fp32, tok, samples, batch_size=4, compile=False, **kw)
    eng16 = score_ifd(bf16, tok, samples, batch_size=4, compile=False, **kw)
    assert [r["id"] for r in eng32] == [s["id"] for s in samples]
    for r, a, b in zip(ref, eng32, eng16, strict=True):
        assert a["n_response_tokens"] == r["n_response_tokens"] == b["n_response_tokens"]
        for key in ("ppl_cond", "ppl_direct", "ifd"):
            assert _rel(a[key], r[key]) <= 1e-3, (key, a, r)  # well inside the 0.05 target
            assert _rel(b[key], r[key]) <= 0.1, (key, b, r)  # bf16: looser
        assert _rel(a["ifd"], r["ifd"]) <= 0.05 and _rel(b["ifd"], r["ifd"]) <= 0.05


def test_chat_passes_and_end_of_turn(tiny):
    _, _, tok = tiny
    builder = PromptBuilder(tok, system_prompt=SYSTEM, template="chat", max_length=512)
    sample = {"id": "a", "instruction": "Say hello.", "input": "To Ann.", "output": "Hello, Ann!"}
    (p,) = builder.prepare([sample])
    y = tok("Hello, Ann!", add_special_tokens=False)["input_ids"]
    eot = tok.convert_tokens_to_ids("<|im_end|>")
    assert p.n_response == len(y) + 1
    assert p.cond[p.cond_prefix :] == p.direct[p.direct_prefix :] == [*y, eot]
    text = tok.decode(p.cond)
    assert text.startswith(f"<|im_start|>system\n{SYSTEM}<|im_end|>")
    assert "<|im_start|>user\nSay hello.\n\nTo Ann.<|im_end|>\n<|im_start|>assistant\n" in text
    assert tok.decode(p.direct[: p.direct_prefix]) == "<|im_start|>assistant\n"
    assert p.flags == []


def test_raw_template_is_superfiltering(tiny):
    _, _, tok = tiny
    builder = PromptBuilder(tok, system_prompt=SYSTEM, template="raw", max_length=512)
    s = {"id": "a", "instruction": "Add.", "input": "2+2", "output": "4"}
    (p,) = builder.prepare([s])
    start = tok.convert_tokens_to_ids("<|endoftext|>")
    assert p.cond[0] == start and p.direct[: p.direct_prefix] == [start]
    assert tok.decode(p.cond[1 : p.cond_prefix]) == "Add.\n2+2\n"
    assert p.direct[p.direct_prefix :] == tok("4", add_special_tokens=False)["input_ids"]
    (q,) = builder.prepare([{**s, "input": ""}])
    assert tok.decode(q.cond[1 : q.cond_prefix]) == "Add.\n"


def test_truncation_flags_and_same_T(tiny):
    fp32, _, tok = tiny
    max_length = 128
    builder = PromptBuilder(tok, system_prompt=SYSTEM, template="chat", max_length=max_length)
    fixed = len(builder.pre) + len(builder.post)
    long_y = {"id": "y", "instruction": "Write.", "input": "", "output": "word " * 400}
    long_x = {"id": "x", "instruction": "start " + "filler " * 400 + "END", "output": "Fine."}
    both = {"id": "b", "instruction": "w " * 400, "input": "", "output": "v " * 400}
    py, px, pb = builder.prepare([long_y, long_x, both])
    assert py.flags == [FLAG_TRUNC_RESPONSE]
    assert py.n_response == max_length - RESPONSE_RESERVE - fixed
    assert px.flags == [FLAG_TRUNC_INSTRUCTION]
    assert len(px.cond) == max_length
    kept = tok.decode(px.cond[len(builder.pre) : px.cond_prefix - len(builder.post)])
    assert kept.endswith("END") and "start" not in kept  # cut from the left
    assert set(pb.flags) == {FLAG_TRUNC_RESPONSE, FLAG_TRUNC_INSTRUCTION}
    for p in (py, px, pb):
        assert len(p.cond) <= max_length and len(p.direct) <= max_length
        assert p.cond[p.cond_prefix :] == p.direct[p.direct_prefix :]
        assert len(p.cond) - p.cond_prefix == len(p.direct) - p.direct_prefix == p.n_response
    rows = score_ifd(fp32, tok, [long_y, long_x, both], system_prompt=SYSTEM, max_length=max_length)
    assert [r["flags"] for r in rows] == [py.flags, px.flags, pb.flags]
    assert rows[0]["n_response_tokens"] == py.n_response


def test_batch_order_independence(tiny):
    fp32, bf16, tok = tiny
    samples = _samples(16, seed=3)
    shuffled = samples[:]
    random.Random(1).shuffle(shuffled)
    for model, tol in ((fp32, 1e-5), (bf16, 0.02)):
        a = score_ifd(model, tok, samples, system_prompt=SYSTEM, batch_size=5, compile=False)
        b = score_ifd(model, tok, shuffled, system_prompt=SYSTEM, batch_size=3, compile=False)
        assert [r["id"] for r in b] == [s["id"] for s in shuffled]
        by_id = {r["id"]: r for r in b}
        for r in a:
            assert _rel(r["ifd"], by_id[r["id"]]["ifd"]) <= tol


def test_errors_are_raised_not_scored(tiny):
    fp32, _, tok = tiny
    with pytest.raises(ValueError, match="no tokens"):
        score_ifd(
            fp32,
            tok,
            [{"id": "e", "instruction": "x", "input": "", "output": ""}],
            system_prompt=SYSTEM,
            template="raw",
        )
    with pytest.raises(ValueError, match="template"):
        score_ifd(fp32, tok, _samples(1), system_prompt=SYSTEM, template="alpaca")
    with pytest.raises(ValueError, match="system prompt"):
        score_ifd(fp32, tok, _samples(1), system_prompt="")


def test_small_jobs_do_not_compile_and_peft_is_unwrapped(tiny):
    from peft import LoraConfig, get_peft_model

    fp32, _, tok = tiny
    engine = IFDEngine(fp32, tok, system_prompt=SYSTEM, compile="auto")
    base = engine.score(_samples(4))
    assert engine.stats.compiled is False and engine.stats.warmup_s == 0.0
    prepared = engine.builder.prepare(_samples(4))
    assert engine.stats.tokens == sum(len(p.cond) + len(p.direct) for p in prepared)
    peft = get_peft_model(copy.deepcopy(fp32), LoraConfig(r=4, target_modules=["q_proj"]))
    wrapped = score_ifd(peft, tok, _samples(4), system_prompt=SYSTEM, compile=False)
    for a, b in zip(base, wrapped, strict=True):  # LoRA B starts at zero: same model
        assert _rel(a["ifd"], b["ifd"]) <= 1e-5


def test_score_ifd_command(tmp_path, capsys):
    from cift.scoring.commands import score_ifd_command

    src = tmp_path / "data.jsonl"
    good = [
        {"instruction": "Name a colour.", "input": "", "output": "Blue."},
        {
            "id": "sg",
            "conversations": [
                {"from": "human", "value": "Say hi."},
                {"from": "gpt", "value": "Hi there!"},
            ],
        },
        {"id": "long", "instruction": "Repeat.", "input": "", "output": "again " * 1200},
    ]
    lines = [json.dumps(good[0]), "{not json", "", json.dumps(good[1]), json.dumps(good[2])]
    src.write_text("\n".join(lines) + "\n")
    out = tmp_path / "scores.jsonl"
    code = score_ifd_command(src, out, ["model=tiny_random"])
    assert code == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    timing = {k: summary.pop(k) for k in ("tokens", "seconds", "tokens_per_s")}
    assert summary == {"lines": 5, "accepted": 3, "rejected": 1, "blank": 1, "scored": 3}
    assert timing["tokens"] > 0 and timing["seconds"] > 0  # from process start, load included
    rate = timing["tokens"] / timing["seconds"]  # both rounded in the printed line
    assert timing["tokens_per_s"] == pytest.approx(rate, rel=0.01, abs=0.1)
    rows = [json.loads(x) for x in out.read_text().splitlines()]
    assert [r["id"] for r in rows][1:] == ["sg", "long"]
    for r in rows:
        assert {"id", "ppl_cond", "ppl_direct", "ifd", "flags"} <= set(r)
        assert r["ifd"] > 0
    assert rows[2]["flags"] == [FLAG_TRUNC_RESPONSE]
    rejects = [json.loads(x) for x in (tmp_path / "scores.rejects.jsonl").read_text().splitlines()]
    assert [(r["line"], r["reason"]) for r in rejects] == [(2, "invalid_json")]


@pytest.mark.slow
def test_compiled_engine_matches_eager(tiny):
    _, bf16, tok = tiny
    samples = _samples(20, seed=5)
    eager = score_ifd(bf16, tok, samples, system_prompt=SYSTEM, compile=False)
    engine = IFDEngine(bf16, tok, system_prompt=SYSTEM, compile=True, batch_size=4)
    compiled = engine.score(samples)
    assert engine.stats.compiled and engine.stats.warmup_s > 0
    assert all(layer._compiled_call_impl is not None for layer in bf16.model.layers)
    for a, b in zip(eager, compiled, strict=True):
        assert _rel(a["ifd"], b["ifd"]) <= 0.02


@pytest.mark.slow
def test_unrelated_response_has_ifd_at_least_one_on_embedded_model():
    from cift.models.loading import ModelSpec
    from tests.conftest import compose

    cfg = compose()
    loaded = ModelSpec(name="smollm2_135m").load()
    record = (
        "I am a 34-year-old woman. For three days I have had a high temperature, aching all "
        "over, a dry cough and a bad headache. It started suddenly. Several colleagues at work "
        "have the flu. The doctor found a temperature of 39.2 C and a clear chest."
    )
    relevant = (
        "1. The patient has a sudden onset of high fever, muscle aches, dry cough and "
        "headache for three days.\n2. Several colleagues have influenza, so exposure is likely."
        "\n3. The chest is clear, which makes pneumonia unlikely.\n4. Taken together, the most "
        "likely diagnosis is influenza.\nDiagnosis: Influenza\nAdvice: Rest, drink plenty of "
        "fluids and take paracetamol for the fever; seek care if you become short of breath."
    )
    unrelated = (
        "Preheat the oven to 180 C. Mash three ripe bananas in a bowl, stir in melted butter, "
        "sugar, one egg and a teaspoon of vanilla, then fold in the flour and baking soda. "
        "Pour the batter into a loaf tin and bake for about an hour, until a skewer comes out "
        "clean. Let the banana bread cool before slicing."
    )
    instruction = "Reason step by step as a physician and give the most likely diagnosis."
    samples = [
        {"id": "relevant", "instruction": instruction, "input": record, "output": relevant},
        {"id": "unrelated", "instruction": instruction, "input": record, "output": unrelated},
    ]
    rows = score_ifd(loaded.model, loaded.tokenizer, samples, system_prompt=cfg.system_prompt)
    ifd = {r["id"]: r["ifd"] for r in rows}
    assert ifd["relevant"] < 1.0 <= ifd["unrelated"], ifd


def test_roofline_probe_at_model_shapes(tiny):
    import torch

    from cift.bench.roofline import matmul_probe, merge_probes, model_shapes

    fp32, _, _ = tiny
    shapes = model_shapes(fp32)
    cfg = fp32.config
    linears = [m for m in fp32.model.layers[0].modules() if isinstance(m, torch.nn.Linear)]
    assert shapes.layers == cfg.num_hidden_layers
    assert sorted(shapes.layer) == sorted((m.in_features, m.out_features) for m in linears)
    assert shapes.head == (cfg.hidden_size, cfg.vocab_size)
    body = sum(
        m.weight.numel()
        for layer in fp32.model.layers
        for m in layer.modules()
        if isinstance(m, torch.nn.Linear)
    )
    head = fp32.lm_head.weight.numel()
    assert shapes.flops_per_token(0.25) == 2 * body + 2 * head * 0.25
    a = matmul_probe(shapes, 0.25, dtype=torch.float32, rows=64, head_rows=32, repeats=3)
    b = matmul_probe(shapes, 0.25, dtype=torch.float32, rows=64, head_rows=32, repeats=2)
    assert len(a.rates) == 3 and min(a.rates) > 0 and 0 <= a.spread < 1
    assert a.flops == pytest.approx(a.flops_per_token * max(a.rates))
    both = merge_probes([a, b])
    assert both.rates == a.rates + b.rates and both.best_tokens_per_s == max(both.rates)
    with pytest.raises(ValueError, match="scored_fraction"):
        matmul_probe(shapes, 1.5, dtype=torch.float32)


def test_roofline_of_an_encoder_has_no_head_and_targets_rebase():
    import torch
    from transformers import BertConfig, BertModel

    from cift.bench.roofline import matmul_probe, model_shapes, speedup_target

    cfg = BertConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        vocab_size=100,
    )
    shapes = model_shapes(BertModel(cfg))
    assert shapes.head is None and shapes.layers == 2
    assert sorted(shapes.layer) == sorted([(32, 32)] * 4 + [(32, 64), (64, 32)])
    assert shapes.flops_per_token(0.0) == 2 * 2 * (4 * 32 * 32 + 2 * 32 * 64)
    probe = matmul_probe(shapes, 0.0, dtype=torch.float32, rows=16, repeats=2)
    assert len(probe.rates) == 2 and min(probe.rates) > 0
    # the nominal speedup where the roofline allows it, else 0.65 of the ceiling
    assert speedup_target(3.0, 10.0) == 3.0
    assert speedup_target(3.0, 2.0) == pytest.approx(1.3)


def test_thread_settings_are_checked_and_restored(tiny):
    import torch

    from cift.scoring.threads import pick_threads, resolve_threads, torch_threads

    before = torch.get_num_threads()
    with torch_threads(1):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert pick_threads([1, 2], rounds=2) in (1, 2) and pick_threads([3]) == 3
    assert torch.get_num_threads() == before  # probing leaves the count as it was
    for bad in (0, -1, "two", True):
        with pytest.raises(ValueError, match="threads"):
            resolve_threads(bad)
    fp32, _, tok = tiny
    engine = IFDEngine(fp32, tok, system_prompt=SYSTEM, compile=False, threads=1)
    one = engine.score(_samples(6))
    assert engine.stats.threads == 1 and torch.get_num_threads() == before
    auto = score_ifd(fp32, tok, _samples(6), system_prompt=SYSTEM, compile=False)
    for a, b in zip(one, auto, strict=True):
        assert _rel(a["ifd"], b["ifd"]) <= 1e-5

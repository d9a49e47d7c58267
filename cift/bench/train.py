"""`cift bench train`: our LoRA training step vs a plain reference loop, same model, same samples.

Reference: fp32, AdamW, 8 samples per batch in random order padded to the batch maximum,
transformers' full-vocabulary loss. Engine: the step `train_adapter` runs (bf16 autocast on a bf16
frozen base where the CPU has fast bf16, subnormals flushed to zero, length-grouped batches from
our sampler, the LM head on supervised positions only, clipping from the trainer config).
The two alternate step by step, so load from other jobs on a
shared CPU hits both alike; both count non-padding tokens. The two losses are the initial model's
mean response-token loss on the same 32 samples through each path. Progress goes to stderr; the
last stdout line is the JSON result; exit 1 when speedup < 3 or the losses differ by more than 2 %.

roofline_fraction: the engine's tokens/s over what the machine's best matmul rate allows. A LoRA
step's useful matmuls are a forward and a backward through the frozen weights (input gradients
only, none for the frozen weights): 2 × the forward's FLOPs per token, counted as in
`cift bench ifd` (2 × body linear weights + 2 × head weights × the supervised share of tokens),
timed by `cift.bench.roofline`'s probe at the model's shapes in the engine's dtype, best of 7.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from cift.bench.roofline import matmul_probe, model_shapes
from cift.train.data import IGNORE, collate, tokenize_samples
from cift.train.fit import flush_denormals

SPEEDUP_TARGET = 3.0
LOSS_TOLERANCE = 0.02  # relative
LOSS_SAMPLES = 32
REF_BATCH = 8
ROOT = Path(__file__).resolve().parents[2]


def _log(msg: str) -> None:
    print(f"[bench train] {msg}", file=sys.stderr, flush=True)


def bench_samples(n: int, seed: int) -> list[dict]:
    """Realistic mixed lengths: CoT answers to KB records (a random number of their reasoning
    steps) and short general-domain replay samples, about 1:1."""
    from cift.data.answer import render_answer
    from cift.data.general import load_general_tasks
    from cift.data.records import sample_global_test
    from cift.data.reference import reference_answer
    from cift.data.render import STYLES
    from cift.data.sample import sample_task
    from cift.kb import load_kb

    kb = load_kb()
    rng = random.Random(seed)
    records = sample_global_test(kb, per_condition=max(1, n // len(kb.conditions) + 1), seed=seed)
    rng.shuffle(records)
    tasks = load_general_tasks()
    samples = []
    for i in range(n):
        rec = records[i % len(records)]
        if i % 2:
            task = tasks[rng.randrange(len(tasks))]
            words = " ".join([rec["chief_complaint"], *rec["symptoms"]]).split()
            answer = task["answer"] or " ".join(rng.choices(words, k=rng.randint(8, 60)))
            samples.append({"id": f"g{i}", **task, "output": f"{answer}."})
            continue
        task = sample_task(rec, kb, list(STYLES), seed)
        ref = reference_answer(kb, rec, rng)
        ref["steps"] = ref["steps"][: rng.randint(1, len(ref["steps"]))]
        samples.append({"id": rec["id"], **task, "output": render_answer(ref)})
    return samples


def _trainer_cfg(name: str) -> dict:
    from omegaconf import OmegaConf

    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "trainer" / f"{name}.yaml"))
    cfg.pop("defaults", None)
    from cift.models.loading import resolve_precision

    cfg["precision"] = resolve_precision(str(cfg["precision"]), str(cfg.get("accelerator", "cpu")))
    return {**cfg, "enable_progress_bar": False, "log_every_n_steps": 1_000_000}


def _root_cfg(max_length: int) -> tuple[dict, str]:
    """(train config for one fresh epoch without replay, the system prompt) from conf/."""
    from omegaconf import OmegaConf

    root = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "config.yaml"))
    cfg = {**root["train"], "init": "fresh", "mix_ratio": 0.0, "epochs": 1}
    return {**cfg, "max_length": max_length}, root["system_prompt"]


def reference_loss_sum(peft_model, batch: dict) -> float:
    """Summed response-token loss from full-vocabulary fp32 logits (what transformers computes)."""
    logits = peft_model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    return float(
        F.cross_entropy(
            logits[:, :-1].flatten(0, 1).float(),
            batch["labels"][:, 1:].flatten(),
            ignore_index=IGNORE,
            reduction="sum",
        )
    )


def initial_losses(spec, train_cfg: dict, examples, pad_id: int, precision: str) -> tuple:
    """(reference loss, engine loss): the initial model's mean response-token loss on `examples`."""
    from cift.train.fit import base_dtype
    from cift.train.module import supervised_loss, wrap_lora

    n_sup = sum(e.n_supervised for e in examples)
    batches = [collate(examples[i : i + 8], pad_id) for i in range(0, len(examples), 8)]
    torch.manual_seed(0)
    ref_model = wrap_lora(spec.load(dtype="float32").model, train_cfg["lora"]).eval()
    with torch.no_grad():
        ref = sum(reference_loss_sum(ref_model, b) for b in batches) / n_sup
    del ref_model
    torch.manual_seed(0)
    engine = wrap_lora(spec.load(dtype=base_dtype(precision)).model, train_cfg["lora"]).eval()
    total = 0.0
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in precision):
        for b in batches:
            loss, n = supervised_loss(engine, b)
            total += float(loss) * n
    return ref, total / n_sup


class _Path:
    """One training path: a fresh LoRA model, its optimiser and its own step; times its steps."""

    def __init__(self, name: str, peft_model, lr: float, step, flush: bool = False) -> None:
        self.name, self.model, self.step_fn = name, peft_model.train(), step
        # subnormals as zero, as train_adapter runs (the engine only)
        self.context = flush_denormals if flush else contextlib.nullcontext
        params = [p for p in peft_model.parameters() if p.requires_grad]
        self.params = params
        self.opt = torch.optim.AdamW(params, lr=lr)
        self.tokens, self.seconds, self.steps = 0, 0.0, 0

    def step(self, batch: dict) -> float:
        t0 = time.perf_counter()
        with self.context():
            loss = self.step_fn(self.model, batch, self.params)
            self.opt.step()
        self.opt.zero_grad(set_to_none=True)
        self.seconds += time.perf_counter() - t0
        self.tokens += int(batch["attention_mask"].sum())
        self.steps += 1
        return loss

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.seconds


def _reference_step(model, batch: dict, params) -> float:
    loss = model(**batch).loss  # transformers' full-vocabulary loss over every position
    loss.backward()
    return float(loss.detach())


def _engine_step(precision: str, clip: float | None):
    """Our step, as the Trainer runs it: autocast, supervised-rows head, clipping."""
    from cift.train.module import supervised_loss

    def step(model, batch: dict, params) -> float:
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled="bf16" in precision):
            loss, _ = supervised_loss(model, batch)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        return float(loss)

    return step


def interleaved_fit(spec, train_cfg: dict, trainer_cfg: dict, examples, pad_id, seed) -> tuple:
    """Both paths over the same samples, one step of each in turn, so that load from other jobs
    on a shared CPU hits both alike. Reference: random order, padded to the batch maximum;
    engine: length-grouped batches of `train.batch_size` from our sampler and collate."""
    from cift.train.data import LengthGroupedBatchSampler
    from cift.train.fit import base_dtype
    from cift.train.module import keep_activation_dtype, wrap_lora

    precision = str(trainer_cfg["precision"])
    lr = float(train_cfg["lr"])
    torch.manual_seed(seed)
    ref = _Path(
        "reference",
        wrap_lora(spec.load(dtype="float32").model, train_cfg["lora"]),
        lr,
        _reference_step,
    )
    torch.manual_seed(seed)
    engine_model = wrap_lora(spec.load(dtype=base_dtype(precision)).model, train_cfg["lora"])
    if "mixed" in precision and base_dtype(precision) != "float32":
        keep_activation_dtype(engine_model)  # as train_adapter does
    engine = _Path(
        "engine",
        engine_model,
        lr,
        _engine_step(precision, trainer_cfg.get("gradient_clip_val")),
        flush=True,
    )
    order = list(range(len(examples)))
    random.Random(seed).shuffle(order)
    ref_batches = [order[i : i + REF_BATCH] for i in range(0, len(order), REF_BATCH)]
    sampler = LengthGroupedBatchSampler(
        [len(e.input_ids) for e in examples], int(train_cfg["batch_size"]), seed
    )
    engine_batches = sampler.batches(0)
    for i in range(max(len(ref_batches), len(engine_batches))):
        for path, batches, multiple in ((ref, ref_batches, 1), (engine, engine_batches, 8)):
            if i < len(batches):
                batch = collate([examples[j] for j in batches[i]], pad_id, multiple_of=multiple)
                loss = path.step(batch)
                _log(f"{path.name} step {i + 1}: loss {loss:.4f}, {path.tokens_per_s:.0f} tok/s")
    return ref, engine


def run_bench(samples: int, seed: int, trainer: str, max_length: int) -> dict:
    from cift.models.loading import ModelSpec

    spec = ModelSpec(name="smollm2_135m")
    train_cfg, system_prompt = _root_cfg(max_length)
    trainer_cfg = _trainer_cfg(trainer)
    loaded = spec.load(dtype="float32")
    tokenizer, shapes = loaded.tokenizer, model_shapes(loaded.model)
    del loaded
    examples = tokenize_samples(tokenizer, bench_samples(samples, seed), system_prompt, max_length)
    lengths = sorted(len(e.input_ids) for e in examples)
    median = lengths[len(lengths) // 2]
    _log(f"{len(examples)} samples of {lengths[0]}–{lengths[-1]} tokens (median {median})")
    ref_loss, engine_loss = initial_losses(
        spec, train_cfg, examples[:LOSS_SAMPLES], tokenizer.pad_token_id, trainer_cfg["precision"]
    )
    _log(f"initial loss: reference {ref_loss:.4f}, engine {engine_loss:.4f}")
    ref, engine = interleaved_fit(
        spec, train_cfg, trainer_cfg, examples, tokenizer.pad_token_id, seed
    )
    for path in (ref, engine):
        _log(f"{path.name}: {path.tokens} tokens in {path.seconds:.1f} s, {path.steps} steps")
    if ref.tokens != engine.tokens:
        raise RuntimeError(f"token counts differ: {ref.tokens} vs {engine.tokens}")
    speedup = engine.tokens_per_s / ref.tokens_per_s
    supervised = sum(e.n_supervised for e in examples) / sum(len(e.input_ids) for e in examples)
    dtype = torch.bfloat16 if "bf16" in str(trainer_cfg["precision"]) else torch.float32
    probe = matmul_probe(shapes, supervised, dtype=dtype)
    _log(f"roofline probe: {probe.summary()}")
    roofline_tps = probe.best_tokens_per_s / 2  # forward + input-gradient backward
    loss_gap = abs(engine_loss - ref_loss) / ref_loss
    return {
        "ref_tokens_per_s": round(ref.tokens_per_s, 1),
        "engine_tokens_per_s": round(engine.tokens_per_s, 1),
        "speedup": round(speedup, 2),
        "roofline_tokens_per_s": round(roofline_tps, 1),
        "roofline_fraction": round(engine.tokens_per_s / roofline_tps, 4),
        "ref_loss": round(ref_loss, 4),
        "engine_loss": round(engine_loss, 4),
        "target_met": bool(speedup >= SPEEDUP_TARGET and loss_gap <= LOSS_TOLERANCE),
    }


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cift bench train", description=__doc__)
    add_arguments(p)
    return p


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--samples", type=int, default=48, help="training samples per path")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--trainer", default="cpu", help="conf/trainer option for the engine")
    p.add_argument("--max-length", type=int, default=512, help="tokens per sample at most")


def run(args: argparse.Namespace) -> int:
    """Run the bench for parsed `add_arguments` options; print the JSON line; 1 if target missed."""
    if args.samples < LOSS_SAMPLES:
        raise SystemExit(f"--samples must be >= {LOSS_SAMPLES}")
    result = run_bench(args.samples, args.seed, args.trainer, args.max_length)
    print(json.dumps(result))
    return 0 if result["target_met"] else 1


def main(argv: list[str] | None = None) -> int:
    return run(build_parser().parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())

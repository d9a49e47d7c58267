"""IFD scoring engine: PPL(y|x), PPL(y) and IFD = PPL(y|x) / PPL(y) for many samples, fast.

Formulas (SPEC §1): PPL(y|x) = exp(−1/T Σ_t log p(y_t | x, y_<t)), PPL(y) = exp(−1/T Σ_t log
p(y_t | y_<t)), IFD = PPL(y|x) / PPL(y). IFD ≥ 1: the instruction does not help.

What the two passes feed the model
- template="chat": conditional = the chat template with the explicit `system_prompt` (never the
  tokenizer's default) + the user turn (`user_message(instruction, input)`) + the assistant
  header + y; direct = the assistant header alone + y. y = tokens of the output followed by the
  template's end-of-turn token (`<|im_end|>` for ChatML models), so ending the answer is scored.
- template="raw" (Superfiltering): conditional = S + `{instruction}\\n{input}\\n` (or
  `{instruction}\\n` without input) + y; direct = S + y, where S is `<|endoftext|>` when the
  vocabulary has it, else BOS, else EOS. y = tokens of the output, no end-of-turn token
  (Superfiltering appends none).
- y is tokenised ONCE and the same T tokens are scored in both passes.

Truncation (never silent): the conditional pass must fit `max_length`. y keeps at most
`max_length − 32 − F` tokens, F = the conditional's fixed template tokens (system message and
headers in chat mode, S in raw mode), so at least 32 instruction tokens always fit; a longer y is
cut on the right in both passes and flagged `truncated_response` (the cut drops the end-of-turn
token). An instruction that does not fit beside y is cut from its LEFT (the end of the user turn,
next to the answer, is kept) and flagged `truncated_instruction`. An empty y raises.

Speed (this is the point of the module; see `cift bench ifd`)
- Both passes of all samples are one job: sequences are sorted by length and batched, each batch
  right-padded to a multiple of `pad_multiple` (few distinct shapes, little padding). Right
  padding under a causal mask never changes the real tokens' outputs, so no attention mask is
  passed and SDPA runs its causal kernel.
- The transformer body (`model.model`) runs once per batch; the LM head (`model.lm_head`) runs
  ONLY on the hidden states of scored positions, in fixed-size chunks; log-softmax in fp32.
- bf16 where the CPU has AMX/AVX512-BF16 (`resolve_dtype("auto")`), `torch.inference_mode`.
- `compile="auto"` compiles the decoder layers (regional compilation: `nn.Module.compile` on each
  layer, so the ~30 identical layers share ONE graph with dynamic shapes, compiled once, instead
  of one unrolled whole-body graph that took over 10 minutes to build here) and the head chunk (a
  static shape) with torch.compile only when the job has at least `COMPILE_MIN_TOKENS` tokens,
  the size at which the saving pays for the compile; `True`/`False` force it. The layers are
  compiled in place: the model's own forward runs them compiled afterwards too (same results).
- Threads: `threads="auto"` measures 1 thread against one per core on a slice of this work
  (`cift.scoring.threads`) on the first call; on a shared CPU one thread per core can be 10×
  slower. The count is set for the call and restored after it.

Models: any causal LM whose `.model` is the transformer body (returning `last_hidden_state`) and
`.lm_head` the output projection (Llama, Qwen2, Mistral, SmolLM2 …). A PEFT `PeftModel` is
unwrapped with `get_base_model()`; its LoRA layers still run, but pass a merged model
(`merge_and_unload()`) for full speed — the caller loads and merges the proxy adapter.
Errors propagate; nothing is turned into a number.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

from cift.data.sample import user_message
from cift.progress import progress

TEMPLATES = ("chat", "raw")
RESPONSE_RESERVE = 32  # instruction tokens always kept beside a truncated response
# "auto" compiles from this many tokens (both passes) on. Measured on a loaded 2-core Xeon
# (AMX-BF16, one thread): compiling the layers takes ~60 s (~10 s with a warm inductor cache)
# and lifts SmolLM2-135M's body from ~330 to ~750–980 tok/s (≈ 1.9 ms saved per token), so it
# pays from ~32k tokens (~130 short samples); an idle machine scales both sides alike.
COMPILE_MIN_TOKENS = 40_000
HEAD_CHUNK = 512  # scored rows per LM-head call (a static shape for the compiled head)
FLAG_TRUNC_RESPONSE = "truncated_response"
FLAG_TRUNC_INSTRUCTION = "truncated_instruction"


@dataclass
class Prepared:
    """One sample tokenised for both passes: full id lists and where y starts in each."""

    id: str
    cond: list[int]
    direct: list[int]
    cond_prefix: int  # y starts at cond[cond_prefix]
    direct_prefix: int
    n_response: int  # T, the same in both passes
    flags: list[str] = field(default_factory=list)

    @property
    def tokens(self) -> int:
        return len(self.cond) + len(self.direct)


class PromptBuilder:
    """Tokenises samples into the two passes for one tokenizer, template and system prompt."""

    SENTINEL = "\u2063CIFT_SLOT\u2063"

    def __init__(
        self, tokenizer: Any, *, system_prompt: str, template: str = "chat", max_length: int = 1024
    ) -> None:
        if template not in TEMPLATES:
            raise ValueError(f"filter.ifd.template: {template!r} is not one of {TEMPLATES}")
        self.tok = tokenizer
        self.template = template
        self.max_length = int(max_length)
        self.system_prompt = system_prompt
        if template == "chat":
            self._init_chat(system_prompt)
        else:
            self._init_raw()
        fixed = len(self.pre) + len(self.post)
        self.max_response = self.max_length - RESPONSE_RESERVE - fixed
        if self.max_response < 1:
            raise ValueError(
                f"filter.ifd.max_length={self.max_length} leaves no room for a response: the "
                f"template takes {fixed} tokens and {RESPONSE_RESERVE} are kept for the instruction"
            )

    def _encode(self, text: str) -> list[int]:
        return list(self.tok(text, add_special_tokens=False)["input_ids"])

    def _init_chat(self, system_prompt: str) -> None:
        tok = self.tok
        if not getattr(tok, "chat_template", None):
            raise ValueError(
                "filter.ifd.template=chat: the tokenizer has no chat template (use raw)"
            )
        if not system_prompt:
            raise ValueError("filter.ifd.template=chat needs an explicit system prompt")
        s = self.SENTINEL
        system = {"role": "system", "content": system_prompt}
        turn = [system, {"role": "user", "content": s}]
        with_gen = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=True)
        without = tok.apply_chat_template(turn, tokenize=False, add_generation_prompt=False)
        if not with_gen.startswith(without) or with_gen.count(s) != 1:
            raise ValueError("chat template: cannot locate the user turn and assistant header")
        header = with_gen[len(without) :]
        if not header:
            raise ValueError("chat template: add_generation_prompt adds no assistant header")
        pre, post = with_gen.split(s)
        answered = tok.apply_chat_template(
            [*turn[:1], {"role": "user", "content": "x"}, {"role": "assistant", "content": s}],
            tokenize=False,
        )
        after = answered.split(s, 1)[1]
        special = set(getattr(tok, "all_special_ids", []) or [])
        eot: list[int] = []
        for t in self._encode(after):
            eot.append(t)
            if t in special:
                break
        else:  # no special token closes the turn: fall back to EOS
            if tok.eos_token_id is None:
                raise ValueError("chat template: no end-of-turn token and no EOS token")
            eot = [tok.eos_token_id]
        self.pre, self.post = self._encode(pre), self._encode(post)
        self.direct_prefix = self._encode(header)
        self.eot = eot

    def _init_raw(self) -> None:
        tok = self.tok
        vocab = tok.get_vocab()
        if "<|endoftext|>" in vocab:
            start = vocab["<|endoftext|>"]
        elif tok.bos_token_id is not None:
            start = tok.bos_token_id
        elif tok.eos_token_id is not None:
            start = tok.eos_token_id
        else:
            raise ValueError("template=raw: the tokenizer has no end-of-text, BOS or EOS token")
        self.pre, self.post = [start], []
        self.direct_prefix = [start]
        self.eot = []

    def instruction_text(self, instruction: str, input_text: str) -> str:
        if self.template == "chat":
            return user_message(instruction, input_text)
        return f"{instruction}\n{input_text}\n" if input_text else f"{instruction}\n"

    def prepare(self, samples: list[dict]) -> list[Prepared]:
        """Tokenise every sample once (batched calls to the fast tokenizer)."""
        if not samples:
            return []
        instr = [self.instruction_text(s["instruction"], s.get("input") or "") for s in samples]
        enc = self.tok(instr, add_special_tokens=False)["input_ids"]
        ys = self.tok([s["output"] for s in samples], add_special_tokens=False)["input_ids"]
        out = []
        for sample, x, y in zip(samples, enc, ys, strict=True):
            out.append(self._assemble(str(sample["id"]), list(x), list(y) + self.eot))
        return out

    def _assemble(self, sid: str, x: list[int], y: list[int]) -> Prepared:
        flags: list[str] = []
        if not y:
            raise ValueError(f"sample {sid}: the response has no tokens")
        if len(y) > self.max_response:
            y = y[: self.max_response]
            flags.append(FLAG_TRUNC_RESPONSE)
        room = self.max_length - len(self.pre) - len(self.post) - len(y)
        if len(x) > room:
            x = x[len(x) - room :]
            flags.append(FLAG_TRUNC_INSTRUCTION)
        prompt = self.pre + x + self.post
        return Prepared(
            id=sid,
            cond=prompt + y,
            direct=self.direct_prefix + y,
            cond_prefix=len(prompt),
            direct_prefix=len(self.direct_prefix),
            n_response=len(y),
            flags=flags,
        )


def unwrap_causal_lm(model: Any) -> Any:
    """The causal LM itself: a PeftModel is unwrapped (its LoRA layers still apply)."""
    if type(model).__module__.startswith("peft.") and hasattr(model, "get_base_model"):
        model = model.get_base_model()  # PeftModel forwards attributes: unwrap explicitly
    if not hasattr(model, "model") or not hasattr(model, "lm_head"):
        raise TypeError(
            f"{type(model).__name__}: the IFD engine needs a causal LM with .model (the body) "
            "and .lm_head"
        )
    return model


def result_row(p: Prepared, nll_cond: float, nll_direct: float) -> dict:
    """The per-sample output from mean negative log-likelihoods (nats/token) of both passes."""
    for name, value in (("conditional", nll_cond), ("direct", nll_direct)):
        if not math.isfinite(value):
            raise FloatingPointError(f"sample {p.id}: {name} pass gave a non-finite loss {value}")
    return {
        "id": p.id,
        "ppl_cond": math.exp(nll_cond),
        "ppl_direct": math.exp(nll_direct),
        "ifd": math.exp(nll_cond - nll_direct),
        "n_response_tokens": p.n_response,
        "flags": list(p.flags),
    }


@dataclass
class RunStats:
    """What the last `score` call did (the bench reads it)."""

    sequences: int = 0
    tokens: int = 0  # non-padding tokens, both passes
    padded_tokens: int = 0
    scored_tokens: int = 0
    batches: int = 0
    shapes: int = 0
    seconds: float = 0.0
    body_s: float = 0.0  # of `seconds`: transformer body
    head_s: float = 0.0  # of `seconds`: gather + LM head + log-softmax
    compiled: bool = False
    warmup_s: float = 0.0
    threads: int = 0


class IFDEngine:
    """Batched, bucketed, head-at-scored-positions scorer; reuse one engine for many calls."""

    def __init__(
        self,
        model: Any,
        tokenizer: Any,
        *,
        system_prompt: str,
        template: str = "chat",
        max_length: int = 1024,
        batch_size: int = 16,
        compile: bool | str = "auto",
        pad_multiple: int = 16,
        max_batch_tokens: int | None = None,
        threads: int | str = "auto",
    ) -> None:
        import torch

        from cift.scoring.threads import resolve_threads

        if compile not in (True, False, "auto"):
            raise ValueError(f"compile: {compile!r} is not true, false or 'auto'")
        if batch_size < 1:
            raise ValueError(f"batch_size must be ≥ 1, got {batch_size}")
        self.lm = unwrap_causal_lm(model)
        self.body, self.head = self.lm.model, self.lm.lm_head
        self.builder = PromptBuilder(
            tokenizer, system_prompt=system_prompt, template=template, max_length=max_length
        )
        self.batch_size = int(batch_size)
        self.max_batch_tokens = int(max_batch_tokens or self.batch_size * 512)
        self.pad_multiple = int(pad_multiple)
        self.compile = compile
        # "auto" is measured once per engine, on its first call (see cift.scoring.threads)
        self.threads: int | str = threads if threads == "auto" else resolve_threads(threads)
        self.device = next(self.lm.parameters()).device
        self.pad_id = tokenizer.pad_token_id
        if self.pad_id is None:
            self.pad_id = tokenizer.eos_token_id if tokenizer.eos_token_id is not None else 0
        self._body_fn = self._eager_body
        self._head_fn = _head_logprobs
        self._compiled = False
        self.stats = RunStats()
        self._torch = torch

    # ------------------------------------------------------------------ compilation
    def _eager_body(self, ids):
        return self.body(input_ids=ids, use_cache=False).last_hidden_state

    def compile_now(self) -> float:
        """Compile body and head and run them once on dummy inputs; returns seconds spent."""
        torch = self._torch
        if self._compiled:
            return 0.0
        t0 = time.perf_counter()
        layers = getattr(self.body, "layers", None)
        if layers is None:
            body = torch.compile(self._eager_body, dynamic=True)
        else:
            for layer in layers:  # one graph for all layers (regional compilation)
                layer.compile(dynamic=True)
            body = self._eager_body
        head = torch.compile(_head_logprobs, dynamic=False)
        hidden = self.lm.config.hidden_size
        with torch.inference_mode():
            ids = torch.full((2, 2 * self.pad_multiple), self.pad_id, device=self.device)
            body(ids)
            h = torch.zeros(HEAD_CHUNK, hidden, dtype=self.head.weight.dtype, device=self.device)
            tgt = torch.zeros(HEAD_CHUNK, dtype=torch.long, device=self.device)
            head(h, self.head.weight, tgt)
        self._body_fn, self._head_fn, self._compiled = body, head, True
        return time.perf_counter() - t0

    # ------------------------------------------------------------------ scoring
    def score(self, samples: list[dict]) -> list[dict]:
        """Per sample, in input order: id, ppl_cond, ppl_direct, ifd, n_response_tokens, flags."""
        prepared = self.builder.prepare(samples)
        return self.score_prepared(prepared)

    def score_prepared(self, prepared: list[Prepared]) -> list[dict]:
        from cift.scoring.threads import resolve_threads, torch_threads

        if not prepared:
            self.stats = RunStats()
            return []
        if self.threads == "auto" and self.device.type == "cpu":
            self.threads = resolve_threads("auto")
        if self.device.type != "cpu":
            return self._score_prepared(prepared)
        with torch_threads(int(self.threads)):
            return self._score_prepared(prepared)

    def _score_prepared(self, prepared: list[Prepared]) -> list[dict]:
        torch = self._torch
        stats = RunStats(threads=self._torch.get_num_threads())
        seqs: list[tuple[list[int], int, int]] = []  # (ids, prefix, T) per pass
        for p in prepared:
            seqs.append((p.cond, p.cond_prefix, p.n_response))
            seqs.append((p.direct, p.direct_prefix, p.n_response))
        stats.sequences = len(seqs)
        stats.tokens = sum(len(s[0]) for s in seqs)
        stats.scored_tokens = 2 * sum(p.n_response for p in prepared)
        want_compile = self.compile is True or (
            self.compile == "auto" and stats.tokens >= COMPILE_MIN_TOKENS
        )
        if want_compile and not self._compiled:
            stats.warmup_s = self.compile_now()
        stats.compiled = self._compiled
        sums = torch.zeros(len(seqs), dtype=torch.float64)
        t0 = time.perf_counter()
        shapes = set()
        with torch.inference_mode():
            for batch in progress(self._batches(seqs), desc="IFD", unit="batch"):
                stats.batches += 1
                ids, flat, targets, owner = self._collate(seqs, batch)
                shapes.add(tuple(ids.shape))
                stats.padded_tokens += ids.numel()
                t1 = time.perf_counter()
                hidden = self._body_fn(ids)
                t2 = time.perf_counter()
                rows = hidden.reshape(-1, hidden.shape[-1]).index_select(0, flat)
                logp = self._score_rows(rows, targets)
                stats.head_s += time.perf_counter() - t2
                stats.body_s += t2 - t1
                sums.index_add_(0, owner, logp.double())
        stats.seconds = time.perf_counter() - t0
        stats.shapes = len(shapes)
        self.stats = stats
        out = []
        for i, p in enumerate(prepared):
            nll_c = -float(sums[2 * i]) / p.n_response
            nll_d = -float(sums[2 * i + 1]) / p.n_response
            out.append(result_row(p, nll_c, nll_d))
        return out

    def _batches(self, seqs: list[tuple[list[int], int, int]]) -> list[list[int]]:
        """Indices grouped into batches of similar length (longest first)."""
        order = sorted(range(len(seqs)), key=lambda i: -len(seqs[i][0]))
        batches, cur, cur_len = [], [], 0
        for i in order:
            n = len(seqs[i][0])
            padded = _round_up(max(cur_len, n), self.pad_multiple)
            if cur and (
                len(cur) >= self.batch_size or padded * (len(cur) + 1) > self.max_batch_tokens
            ):
                batches.append(cur)
                cur, cur_len = [], 0
            cur.append(i)
            cur_len = max(cur_len, n)
        if cur:
            batches.append(cur)
        return batches

    def _collate(self, seqs, batch):
        torch = self._torch
        length = _round_up(max(len(seqs[i][0]) for i in batch), self.pad_multiple)
        rows = max(len(batch), 2)  # dynamo specialises size 1: keep ≥ 2 rows, one graph
        ids = torch.full((rows, length), self.pad_id, dtype=torch.long)
        flat, targets, owner = [], [], []
        for r, i in enumerate(batch):
            seq, prefix, n = seqs[i]
            ids[r, : len(seq)] = torch.tensor(seq, dtype=torch.long)
            start = r * length + prefix - 1  # the position whose logits predict y_0
            flat.append(torch.arange(start, start + n))
            targets.append(torch.tensor(seq[prefix : prefix + n], dtype=torch.long))
            owner.append(torch.full((n,), i, dtype=torch.long))
        dev = self.device
        return (
            ids.to(dev),
            torch.cat(flat).to(dev),
            torch.cat(targets).to(dev),
            torch.cat(owner),
        )

    def _score_rows(self, rows, targets):
        """log p(target) per scored row: LM head in chunks of HEAD_CHUNK rows, fp32 softmax."""
        torch = self._torch
        weight = self.head.weight
        bias = getattr(self.head, "bias", None)
        if bias is not None:
            raise NotImplementedError("LM heads with a bias are not supported")
        out = []
        n = rows.shape[0]
        for s in range(0, n, HEAD_CHUNK):
            h, t = rows[s : s + HEAD_CHUNK], targets[s : s + HEAD_CHUNK]
            k = h.shape[0]
            if k < HEAD_CHUNK and self._compiled:  # keep the compiled head's one static shape
                h = torch.cat([h, h.new_zeros(HEAD_CHUNK - k, h.shape[1])])
                t = torch.cat([t, t.new_zeros(HEAD_CHUNK - k)])
            out.append(self._head_fn(h, weight, t)[:k])
        return torch.cat(out).cpu()


def _head_logprobs(h, weight, targets):
    """log_softmax(h @ W.T)[target] with the softmax in fp32 (logits from the model's dtype)."""
    import torch

    logits = torch.nn.functional.linear(h, weight).float()
    return logits.gather(1, targets[:, None]).squeeze(1) - torch.logsumexp(logits, dim=-1)


def _round_up(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def score_ifd(
    model: Any,
    tokenizer: Any,
    samples: list[dict],
    *,
    system_prompt: str,
    template: str = "chat",
    max_length: int = 1024,
    batch_size: int = 16,
    compile: bool | str = "auto",
    threads: int | str = "auto",
) -> list[dict]:
    """IFD of every sample ({"id","instruction","input","output"}), in input order.

    Returns per sample {"id", "ppl_cond", "ppl_direct", "ifd", "n_response_tokens", "flags"};
    see the module docstring for the exact passes, truncation and speed settings.
    """
    engine = IFDEngine(
        model,
        tokenizer,
        system_prompt=system_prompt,
        template=template,
        max_length=max_length,
        batch_size=batch_size,
        compile=compile,
        threads=threads,
    )
    return engine.score(samples)

"""A local transformers model as teacher: batched, length-sorted, left-padded, bf16 where fast."""

from __future__ import annotations

import re
import time

from cift.generate.teachers.base import TeacherReply, TeacherRequest
from cift.models import LoadedModel, ModelSpec
from cift.progress import progress


class LocalTeacher:
    """Generates with `model.generate` over length-sorted batches (never one sample at a time)."""

    def __init__(
        self,
        model: ModelSpec,
        name: str = "local",
        batch_size: int = 16,
        device: str = "cpu",
        repetition_penalty: float = 1.0,
        adapter: str | None = None,
        stop_after_line: str | None = None,
    ) -> None:
        self.spec = model
        self.adapter = adapter  # a PEFT adapter merged into the base at load time
        self.stop_after_line = stop_after_line  # e.g. "Advice:": end once that line is complete
        self.name = name
        self.batch_size = batch_size
        self.device = device
        self.repetition_penalty = repetition_penalty  # small models loop without it
        self._loaded: LoadedModel | None = None
        self.seconds = 0.0  # wall time spent in generate(), for tokens/s

    @property
    def loaded(self) -> LoadedModel:
        if self._loaded is None:
            self._loaded = self.spec.load(self.device)
            if self.adapter:
                from cift.bank.moe import attach_moe, is_moe

                if is_moe(self.adapter):  # a mixture of LoRA experts cannot be merged
                    self._loaded.model = attach_moe(self._loaded.model, self.adapter).eval()
                else:
                    from peft import PeftModel

                    merged = PeftModel.from_pretrained(self._loaded.model, str(self.adapter))
                    self._loaded.model = merged.merge_and_unload().eval()
        return self._loaded

    def prompt_text(self, request: TeacherRequest) -> str:
        """Chat-templated prompt; a trailing assistant message is continued, not closed."""
        msgs, prefill = request.messages, ""
        if msgs and msgs[-1]["role"] == "assistant":
            msgs, prefill = msgs[:-1], msgs[-1]["content"]
        tok = self.loaded.tokenizer
        return tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True) + prefill

    def generate(
        self,
        requests: list[TeacherRequest],
        *,
        max_new_tokens: int,
        temperature: float,
        top_p: float,
        seed: int,
        stop: list[str] | None = None,
    ) -> list[TeacherReply]:
        import torch

        lm = self.loaded
        tok = lm.tokenizer
        tok.padding_side = "left"
        prompts = [self.prompt_text(r) for r in requests]
        ids = [tok(p, add_special_tokens=False)["input_ids"] for p in prompts]
        order = sorted(range(len(requests)), key=lambda i: len(ids[i]))
        stop_ids = stop_token_ids(tok)
        replies: list[TeacherReply | None] = [None] * len(requests)
        started = time.perf_counter()
        batches = [order[i : i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        for b, batch in enumerate(progress(batches, desc=f"{self.name} generate", unit="batch")):
            enc = tok.pad({"input_ids": [ids[i] for i in batch]}, return_tensors="pt")
            enc = {k: v.to(self.device) for k, v in enc.items()}
            torch.manual_seed(seed + b)
            sample = temperature > 0
            prompt_len = enc["input_ids"].shape[1]
            criteria = (
                [LineEndStop(tok, self.stop_after_line, prompt_len)]
                if self.stop_after_line
                else None
            )
            with torch.inference_mode():
                out = lm.model.generate(
                    **enc,
                    max_new_tokens=max_new_tokens,
                    do_sample=sample,
                    temperature=temperature if sample else None,
                    top_p=top_p if sample else None,
                    top_k=None,
                    # a sampling aid only: greedy calls copy names from the prompt verbatim
                    repetition_penalty=self.repetition_penalty if sample else None,
                    eos_token_id=stop_ids,
                    pad_token_id=tok.pad_token_id,
                    stopping_criteria=criteria,
                    **({"stop_strings": stop, "tokenizer": tok} if stop else {}),
                )
            new = out[:, prompt_len:]
            for row, i in enumerate(batch):
                toks = new[row].tolist()
                n = next((k + 1 for k, t in enumerate(toks) if t in stop_ids), len(toks))
                text = tok.decode(toks[:n], skip_special_tokens=True)
                if self.stop_after_line:
                    text = cut_after_line(text, self.stop_after_line)
                replies[i] = TeacherReply(requests[i].key, text, len(ids[i]), n)
        self.seconds += time.perf_counter() - started
        return replies  # type: ignore[return-value]


def cut_after_line(text: str, marker: str) -> str:
    """`text` up to the end of the last line that starts with `marker` and has content."""
    for match in re.finditer(rf"(?m)^[ \t*]*{re.escape(marker)}[^\n]*\S[^\n]*\n", text):
        return text[: match.end() - 1]
    return text


class LineEndStop:
    """Stops a row once a line starting with `marker` (with content) has ended: "the Advice line
    is the answer's last" without waiting for the token budget. Per-row, so a batch keeps going
    only for the rows still writing."""

    def __init__(self, tokenizer, marker: str, prompt_len: int) -> None:
        self.tokenizer, self.marker, self.prompt_len = tokenizer, marker, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        texts = self.tokenizer.batch_decode(
            input_ids[:, self.prompt_len :], skip_special_tokens=True
        )
        done = [cut_after_line(t, self.marker) != t for t in texts]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def stop_token_ids(tok) -> list[int]:
    """End-of-turn and end-of-text ids: chat models end a turn with a token other than EOS."""
    ids = {tok.eos_token_id}
    for special in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(special)
        if isinstance(tid, int) and tid != tok.unk_token_id:
            ids.add(tid)
    return sorted(i for i in ids if i is not None)

"""A model version on the frozen base: the base plus a PEFT LoRA adapter or a mixture of LoRA
experts, loaded the same way everywhere (training's continual start excepted, which copies
weights into a trainable adapter: `cift.train.adapters.init_from_adapter`).

The adapter's recorded base hash is always checked against the loaded base, and only safetensors
weights are read. A plain LoRA is merged into the base (`merge=True`, the default: logits equal
to the unmerged PEFT model's, at the base's speed) with `merge_lora_into`, which computes exactly
PEFT's `merge_and_unload` arithmetic without wrapping the model first; anything it does not cover
(DoRA, rank patterns, …) goes through PEFT. A mixture of experts is routed, never merged.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from cift.models.adapter_format import (
    check_base_hash,
    is_moe,
    lora_scale,
    read_lora_config,
    weights_file,
)
from cift.models.loading import LoadedModel, ModelSpec

_LORA_KEY = re.compile(r"base_model\.model\.(.+)\.lora_([AB])\.weight")


def load_version(
    spec: ModelSpec,
    adapter: str | Path | None = None,
    *,
    merge: bool = True,
    device: str = "cpu",
    dtype: str | None = None,
) -> LoadedModel:
    """The base of `spec` with `adapter` (None = the base itself) applied, in eval mode."""
    loaded = spec.load(device, dtype=dtype)
    if adapter:
        loaded.model = apply_adapter(loaded.model, adapter, loaded.base_hash, merge=merge).eval()
        loaded.adapter = str(adapter)
    return loaded


def apply_adapter(
    model: Any,
    adapter: str | Path,
    base_hash: str | None,
    *,
    merge: bool = True,
    trainable: bool = False,
) -> Any:
    """`model` (a freshly loaded base, changed in place when merged) with `adapter` applied,
    after the base-hash check. `merge=False` returns the `PeftModel` (for training or logit
    comparisons); a mixture of experts is attached either way."""
    check_base_hash(adapter, base_hash)
    weights_file(adapter)
    if is_moe(adapter):
        from cift.models.moe import attach_moe

        return attach_moe(model, adapter)
    if merge and merge_lora_into(model, adapter):
        return model
    from peft import PeftModel

    peft = PeftModel.from_pretrained(model, str(adapter), is_trainable=trainable)
    return peft.merge_and_unload() if merge else peft


def merge_lora_into(model: Any, adapter_dir: str | Path) -> bool:
    """Merge a plain LoRA adapter (W += scale · B·A on Linear layers) into `model` in place, far
    faster than wrapping it with PEFT first and with PEFT's arithmetic (B·A in fp32, added to the
    weight in its own dtype with one rounding). False, with `model` untouched, for any adapter
    this does not cover (DoRA, rank/alpha patterns, biases, saved modules, …): the caller then
    merges through PEFT."""
    import torch
    from safetensors.torch import load_file

    cfg = read_lora_config(adapter_dir)
    if (
        cfg.get("peft_type", "LORA") != "LORA"
        or cfg.get("use_dora")
        or cfg.get("rank_pattern")
        or cfg.get("alpha_pattern")
        or cfg.get("modules_to_save")
        or cfg.get("fan_in_fan_out")
        or cfg.get("lora_bias")
        or cfg.get("bias", "none") != "none"
    ):
        return False
    r, scale = int(cfg["r"]), lora_scale(cfg)
    pairs: dict[str, dict[str, Any]] = {}
    for key, tensor in load_file(str(weights_file(adapter_dir))).items():
        match = _LORA_KEY.fullmatch(key)
        if match is None:
            return False
        pairs.setdefault(match[1], {})[match[2]] = tensor
    modules = dict(model.named_modules())
    plan = []
    for name, ab in pairs.items():
        layer = modules.get(name)
        if set(ab) != {"A", "B"} or not isinstance(layer, torch.nn.Linear):
            return False
        a, b = ab["A"], ab["B"]
        if a.shape[0] != r or b.shape[1] != r or layer.weight.shape != (b.shape[0], a.shape[1]):
            return False
        plan.append((layer, a, b))
    with torch.no_grad():
        for layer, a, b in plan:
            delta = (b.float() @ a.float()) * scale
            layer.weight.data += delta.to(layer.weight.device)
    return True

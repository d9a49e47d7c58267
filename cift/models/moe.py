"""A mixture of LoRA experts over the bank: per token, a small router per adapted layer mixes the
experts' LoRA deltas (top-k gating, a Switch-style load-balancing loss), initialised from the
experts' weights.

y = W x + Σ_e g_e(x) · s_e · B_e A_e x,  g = renormalised top-k of softmax(R x).

A router fixed to expert j (`fix_router(model, j)`) gives exactly that expert's PEFT forward.
A MoE version is a folder like an adapter's (`cift.models.adapter_format`): the weights file
(router and experts), `moe_config.json` and `cift_adapter.json` (the base hash);
`cift.models.version.load_version` loads it like any adapter (routed, never merged; vLLM cannot
serve it). Fitting the routers on the bank's K-shot data is `cift.bank.moe.train_router`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from cift.models.adapter_format import (
    MOE_CONFIG,
    WEIGHTS,
    is_moe,
    lora_scale,
    read_lora_config,
    weights_file,
    write_adapter_meta,
)

__all__ = [
    "MoLoRALinear",
    "attach_moe",
    "build_moe",
    "expert_tensors",
    "fix_router",
    "is_moe",
    "load_balancing_loss",
    "moe_layers",
    "record_gates",
    "routing_stats",
    "save_moe",
]


def expert_tensors(folder: str | Path) -> dict[str, tuple[torch.Tensor, torch.Tensor, float]]:
    """{module path: (A (r × in), B (out × r), scaling)} of a plain PEFT LoRA adapter."""
    from safetensors.torch import load_file

    scaling = lora_scale(read_lora_config(folder))
    weights = load_file(str(weights_file(folder)))
    out = {}
    for key, a in weights.items():
        if not key.endswith(".lora_A.weight"):
            continue
        path = key.removeprefix("base_model.model.").removesuffix(".lora_A.weight")
        b = weights[key.replace(".lora_A.weight", ".lora_B.weight")]
        out[path] = (a.float(), b.float(), scaling)
    return out


class MoLoRALinear(nn.Module):
    def __init__(self, base: nn.Linear, n_experts: int, rank: int, top_k: int) -> None:
        super().__init__()
        self.base = base
        self.top_k = min(top_k, n_experts)
        self.A = nn.Parameter(torch.zeros(n_experts, rank, base.in_features))
        self.B = nn.Parameter(torch.zeros(n_experts, base.out_features, rank))
        self.register_buffer("scaling", torch.zeros(n_experts))
        self.router = nn.Linear(base.in_features, n_experts, bias=False)
        nn.init.zeros_(self.router.weight)
        self.fixed: int | None = None
        self.record = False  # keep gate statistics of the last forward (aux loss, reports)
        self.probs: torch.Tensor | None = None
        self.mask: torch.Tensor | None = None

    def gates(self, x: torch.Tensor) -> torch.Tensor:
        n = self.A.shape[0]
        if self.fixed is not None:
            return F.one_hot(torch.tensor(self.fixed), n).to(x.dtype).expand(*x.shape[:-1], n)
        probs = torch.softmax(self.router(x.to(self.router.weight.dtype)).float(), dim=-1)
        top = probs.topk(self.top_k, dim=-1).indices
        mask = torch.zeros_like(probs).scatter(-1, top, 1.0)
        gated = probs * mask
        if self.record:
            self.probs, self.mask = probs, mask
        return (gated / gated.sum(dim=-1, keepdim=True)).to(x.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.base(x)
        if self.fixed is not None:  # exactly the chosen expert's PEFT forward
            e = self.fixed
            lora = F.linear(F.linear(x, self.A[e].to(x.dtype)), self.B[e].to(x.dtype))
            return out + lora * self.scaling[e].to(x.dtype)
        g = self.gates(x)
        n, r = self.A.shape[0], self.A.shape[1]
        # every expert's rank-r code at once, gated and scaled, then one matmul over (expert, r):
        # never an (experts × tokens × out_features) tensor
        z = F.linear(x, self.A.reshape(n * r, -1).to(x.dtype)).unflatten(-1, (n, r))
        z = z * (g * self.scaling.to(x.dtype)).unsqueeze(-1)
        b = self.B.permute(1, 0, 2).reshape(self.B.shape[1], n * r).to(x.dtype)
        return out + F.linear(z.flatten(-2), b)


def moe_layers(model: nn.Module) -> list[MoLoRALinear]:
    return [m for m in model.modules() if isinstance(m, MoLoRALinear)]


def _replace(model: nn.Module, path: str, module: nn.Module) -> None:
    parent_path, _, name = path.rpartition(".")
    parent = model.get_submodule(parent_path) if parent_path else model
    setattr(parent, name, module)


def build_moe(model: nn.Module, experts: Sequence[dict], top_k: int = 2, seed: int = 0) -> None:
    """Replace every adapted Linear of `model` (in place) by a MoLoRALinear over `experts`
    (each from `expert_tensors`); an expert that does not adapt a layer contributes zero there.
    Routers start near uniform (small seeded weights, so top-k ties break differently)."""
    paths = sorted({p for e in experts for p in e})
    gen = torch.Generator().manual_seed(seed)
    for path in paths:
        base = model.get_submodule(path)
        rank = max(e[path][0].shape[0] for e in experts if path in e)
        layer = MoLoRALinear(base, len(experts), rank, top_k)
        with torch.no_grad():
            for i, e in enumerate(experts):
                if path in e:
                    a, b, s = e[path]
                    layer.A[i, : a.shape[0]] = a
                    layer.B[i, :, : b.shape[1]] = b
                    layer.scaling[i] = s
            layer.router.weight.normal_(0.0, 1e-3, generator=gen)
        _replace(model, path, layer.to(base.weight.device))
    for p in model.parameters():
        p.requires_grad_(False)
    for layer in moe_layers(model):
        layer.router.weight.requires_grad_(True)


def fix_router(model: nn.Module, expert: int | None) -> None:
    for layer in moe_layers(model):
        layer.fixed = expert


def load_balancing_loss(model: nn.Module) -> torch.Tensor:
    """Switch Transformer's E · Σ_e f_e · P_e per layer (1 when balanced), averaged."""
    losses = []
    for layer in moe_layers(model):
        if layer.probs is None:
            continue
        n = layer.probs.shape[-1]
        f = layer.mask.reshape(-1, n).mean(dim=0) / layer.top_k
        p = layer.probs.reshape(-1, n).mean(dim=0)
        losses.append(n * (f * p).sum())
    return torch.stack(losses).mean() if losses else torch.tensor(0.0)


def record_gates(model: nn.Module, on: bool) -> None:
    for layer in moe_layers(model):
        layer.record, layer.probs, layer.mask = on, None, None


def routing_stats(model: nn.Module, token_mask: torch.Tensor | None = None) -> dict:
    """Mean routing entropy (nats, of the router's softmax) and each expert's share of top-k
    assignments, over the recorded tokens of every layer."""
    entropy, load = [], None
    for layer in moe_layers(model):
        if layer.probs is None:
            continue
        probs, mask = layer.probs, layer.mask
        if token_mask is not None:
            keep = token_mask.bool().reshape(-1)
            probs, mask = (
                probs.reshape(-1, probs.shape[-1])[keep],
                mask.reshape(-1, mask.shape[-1])[keep],
            )
        entropy.append(float(-(probs * probs.clamp_min(1e-12).log()).sum(-1).mean()))
        share = mask.reshape(-1, mask.shape[-1]).sum(0)
        load = share if load is None else load + share
    if load is None:
        return {"routing_entropy": None, "expert_load": None}
    return {
        "routing_entropy": sum(entropy) / len(entropy),
        "expert_load": (load / load.sum()).tolist(),
    }


def save_moe(model: nn.Module, folder: str | Path, config: dict, base_hash: str) -> Path:
    """The router and expert weights + moe_config.json + cift_adapter.json, written atomically."""
    import shutil
    import tempfile

    from safetensors.torch import save_file

    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        tensors = {}
        for name, module in model.named_modules():
            if isinstance(module, MoLoRALinear):
                tensors[f"{name}.A"] = module.A.detach().contiguous()
                tensors[f"{name}.B"] = module.B.detach().contiguous()
                tensors[f"{name}.scaling"] = module.scaling.detach().contiguous()
                tensors[f"{name}.router"] = module.router.weight.detach().contiguous()
        save_file(tensors, str(tmp / WEIGHTS))
        (tmp / MOE_CONFIG).write_text(json.dumps({"format": "cift-molora", **config}, indent=2))
        write_adapter_meta(tmp, base_hash, {"kind": "moe", **config})
        if folder.exists():
            shutil.rmtree(folder)
        tmp.rename(folder)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return folder


def attach_moe(model: nn.Module, folder: str | Path) -> nn.Module:
    """Turn a freshly loaded base `model` into the saved MoE (in place; returned for chaining)."""
    from safetensors.torch import load_file

    folder = Path(folder)
    config = json.loads((folder / MOE_CONFIG).read_text(encoding="utf-8"))
    weights = load_file(str(folder / WEIGHTS))
    paths = sorted({k.rsplit(".", 1)[0] for k in weights})
    for path in paths:
        base = model.get_submodule(path)
        a = weights[f"{path}.A"]
        layer = MoLoRALinear(base, a.shape[0], a.shape[1], int(config["top_k"]))
        with torch.no_grad():
            layer.A.copy_(a)
            layer.B.copy_(weights[f"{path}.B"])
            layer.scaling.copy_(weights[f"{path}.scaling"])
            layer.router.weight.copy_(weights[f"{path}.router"])
        _replace(model, path, layer.to(base.weight.device))
    model.requires_grad_(False)
    return model

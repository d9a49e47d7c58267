"""IFD step: instruction-following difficulty on the proxy model (Cherry_LLM / Superfiltering).

IFD = PPL(y|x) / PPL(y). IFD >= 1 means the instruction does not help predict the answer
(misaligned or noise): dropped here. Samples with IFD below `tau_min` are dropped too; the
ranking among the rest is the selection step's job.
"""

from __future__ import annotations

from cift.filters.base import FilterContext


class IFDFilter:
    def __init__(
        self,
        template: str = "chat",
        tau_min: float = 0.0,
        max_length: int = 1024,
        batch_size: int = 16,
        dtype: str = "auto",
        name: str = "ifd",
    ) -> None:
        if template not in ("chat", "raw"):
            raise ValueError(f"filter.ifd.template: {template!r} is not chat or raw")
        self.template, self.tau_min, self.max_length = template, tau_min, max_length
        self.batch_size, self.dtype, self.name = batch_size, dtype, name

    def apply(
        self, samples: list[dict], stats: dict[str, dict], ctx: FilterContext
    ) -> dict[str, str]:
        from cift.models.version import load_version
        from cift.scoring.ifd import score_ifd

        if not samples:
            return {}
        loaded = load_version(ctx.proxy, ctx.proxy_adapter, dtype=self.dtype)
        model, tokenizer = loaded.model, loaded.tokenizer
        scores = score_ifd(
            model,
            tokenizer,
            samples,
            system_prompt=ctx.system_prompt,
            template=self.template,
            max_length=self.max_length,
            batch_size=self.batch_size,
        )
        drops: dict[str, str] = {}
        for row in scores:
            stat = stats[row["id"]]
            stat.update({k: row[k] for k in ("ppl_cond", "ppl_direct", "ifd")})
            stat["flags"] += row["flags"]
            if row["ifd"] >= 1:
                drops[row["id"]] = "ifd_ge_1"
            elif row["ifd"] < self.tau_min:
                drops[row["id"]] = "ifd_below_tau_min"
        return drops

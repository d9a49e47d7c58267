"""Evaluation parts from the composed config: the evaluator, versions, the judge."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from cift.evaluate.answers import AnswerCache, Version, answer_sampling
from cift.evaluate.ranked import RankCache
from cift.evaluate.suite import Evaluator
from cift.models.loading import base_model_hash
from cift.models.sampling import Sampling


def base_hash(spec: Any) -> str:
    """The base model's weight hash without loading it when its folder is local."""
    folder = Path(spec.local_dir())
    return base_model_hash(folder) if folder.is_dir() else spec.load().base_hash


def version_of(name: str, adapter: str | Path | None, spec: Any) -> Version:
    return Version.of(name, adapter, base_hash(spec))


def pointer_version(pointer: dict, spec: Any) -> Version:
    """The version a deployed.json / proxy.json pointer names."""
    return version_of(pointer["version"], pointer.get("adapter_path"), spec)


def load_model(spec: Any, version: Version) -> tuple[Any, Any]:
    """(model, tokenizer) of a version for scoring (the ranked diagnosis score): the base with the
    version's adapter merged in (a mixture of LoRA experts attached), in eval mode."""
    from cift.models.version import load_version

    loaded = load_version(spec, version.adapter)
    return loaded.model, loaded.tokenizer


def build_evaluator(cfg: DictConfig, records: Iterable[dict] = (), kb: Any = None) -> Evaluator:
    from hydra.utils import instantiate

    from cift.config import domain_kb
    from cift.models.local_chat import LocalTeacher

    spec = instantiate(cfg.model)
    e = cfg.evaluate
    batch_size = int(e.batch_size)
    sampling = answer_sampling(
        int(e.max_new_tokens), temperature=float(e.temperature), seed=int(cfg.seed)
    )

    def make_generator(version: Version, s: Sampling) -> LocalTeacher:
        return LocalTeacher(
            model=spec,
            name=version.name,
            batch_size=batch_size,
            adapter=version.adapter,
            stop_after_line=s.stop_after_line or None,
        )

    backend = str(e.get("backend", "local"))
    if backend == "openai":  # a vLLM with --enable-lora serves every version (cift.evaluate.remote)
        from cift.evaluate.remote import RemoteVersions

        make_generator = RemoteVersions(**e.openai).make_generator  # type: ignore[assignment]
    elif backend != "local":
        raise ValueError(f"evaluate.backend: {backend!r} is not local or openai")

    return Evaluator(
        kb=kb if kb is not None else domain_kb(cfg),
        system_prompt=cfg.system_prompt,
        sampling=sampling,
        cache=AnswerCache(e.get("cache_dir")),
        make_generator=make_generator,
        records={r["id"]: r for r in records},
        n_boot=int(cfg.gate.bootstrap),
        seed=int(cfg.seed),
        batch_size=batch_size,
        load_model=lambda version: load_model(spec, version),
        rank_cache=RankCache(e.get("cache_dir")),
        rank_max_tokens=int(e.get("rank_max_tokens", 8192)),
    )


def build_judge(cfg: DictConfig) -> Any | None:
    """The configured judge (a forced-choice LocalJudge or a Teacher), or None when
    `judge=none`."""
    from hydra.utils import instantiate

    if cfg.judge.get("backend") is None:
        return None
    return instantiate(cfg.judge.backend)


def judge_settings(cfg: DictConfig, seed: int | None = None) -> dict:
    """`judge_pairs`' keyword arguments from the config: prompt, budget, seed, thresholds."""
    return {
        "prompt": cfg.judge.prompt,
        "max_new_tokens": int(cfg.judge.max_new_tokens),
        "seed": int(cfg.seed if seed is None else seed),
        "min_consistency": float(cfg.gate.judge_min_consistency),
        "n_boot": int(cfg.gate.bootstrap),
    }


def judge_configured(cfg: DictConfig, judge: Any, items: list[dict]) -> dict:
    """`judge_pairs` with the configured prompt, budget, seed and gate thresholds: the gate, the
    continual report and the DPO export judge alike."""
    from cift.evaluate.judge import judge_pairs

    return judge_pairs(judge, items, **judge_settings(cfg))

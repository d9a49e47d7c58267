"""LoRA continual fine-tuning (Lightning + PEFT): data, module, adapters, `train_adapter`."""

from cift.train.adapters import init_from_adapter, save_adapter
from cift.train.data import mix_replay, tokenize_sample
from cift.train.fit import train_adapter

__all__ = [
    "init_from_adapter",
    "mix_replay",
    "save_adapter",
    "tokenize_sample",
    "train_adapter",
]

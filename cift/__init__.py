"""cift: continual instruction fine-tuning as a DVC + Hydra DAG."""

__version__ = "0.1.0"

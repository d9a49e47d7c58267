"""Model loading: the embedded SmolLM2 (GGUF → cached safetensors), HF ids/folders, tiny random."""

from cift.models.loading import LoadedModel, ModelSpec, base_model_hash, resolve_dtype

__all__ = ["LoadedModel", "ModelSpec", "base_model_hash", "resolve_dtype"]

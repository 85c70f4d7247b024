"""Model loading: Hugging Face ids, local directories, the embedded default and a tiny test model."""

from seal.models.loading import (
    EMBEDDED_MODEL,
    TINY_RANDOM_MODEL,
    LoadedModel,
    cache_dir,
    check_model,
    load_model,
    resolve_model_dir,
)

__all__ = [
    "EMBEDDED_MODEL",
    "TINY_RANDOM_MODEL",
    "LoadedModel",
    "cache_dir",
    "check_model",
    "load_model",
    "resolve_model_dir",
]

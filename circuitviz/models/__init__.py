"""Loading models (bundled demo, hub id, local directory, GGUF, random) and what each node owns."""

from circuitviz.models.loader import (
    DTYPES,
    LoadedModel,
    ModelInfo,
    ModelLoadError,
    load_model,
    resolve_device,
    resolve_dtype,
)

__all__ = [
    "DTYPES",
    "LoadedModel",
    "ModelInfo",
    "ModelLoadError",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

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
from circuitviz.models.params import ParamMap, ParamSlice, build_param_map
from circuitviz.models.save import save_model

__all__ = [
    "ParamMap",
    "ParamSlice",
    "build_param_map",
    "save_model",
    "DTYPES",
    "LoadedModel",
    "ModelInfo",
    "ModelLoadError",
    "load_model",
    "resolve_device",
    "resolve_dtype",
]

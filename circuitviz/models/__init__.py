"""Loading models (bundled demo, hub id, local directory, GGUF, random) and what each node owns.

Names load on first use, so ``from circuitviz.models import DTYPES`` style imports of the CLI stay
light until a model is really loaded.
"""

from circuitviz._lazy import exports, lazy_namespace

__getattr__, __dir__, __all__ = lazy_namespace(
    __name__,
    exports(
        (
            "loader",
            (
                "DTYPES",
                "LoadedModel",
                "from_model",
                "ModelInfo",
                "ModelLoadError",
                "load_model",
                "resolve_device",
                "resolve_dtype",
            ),
        ),
        ("params", ("ParamMap", "ParamSlice", "build_param_map")),
        ("save", ("save_model",)),
    ),
)

"""What a model spec can be, without loading anything (the CLI's help reads this, not torch)."""

DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float64")

MODEL_SPEC_HELP = (
    "demo (default), smollm2-135m, random:gpt2, random:PATH.json, a .gguf file, a Hugging Face "
    "directory, a hub id, or a tuning run's weights: run:RUN (final) or run:RUN@STEP (a checkpoint)"
)

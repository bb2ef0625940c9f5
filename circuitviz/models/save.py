"""Save a (possibly fine-tuned) bridged model as a plain Hugging Face directory.

``save_pretrained`` fails on a model after ``boot_transformers`` (GPT-2's q/k/v are strided views of the
fused ``c_attn``; Llama has shared tensors). So the weights go through a fresh model of the same
config that shares the bridge's tensors under Hugging Face's own names (``models.plain``; the fused
tensors the bridge keeps in sync, ``c_attn`` and ``c_proj``, carry those names), and that model is
saved. The directory holds ``config.json``, ``generation_config.json``, ``model.safetensors`` and
the tokenizer files (chat template included), and loads with ``transformers`` alone.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch

from circuitviz.models.plain import plain_hf_model

PROVENANCE_FILE = "circuitviz.json"


def hf_state_dict(model) -> dict[str, torch.Tensor]:
    """The model's weights under the Hugging Face names of its architecture (copies)."""
    return {
        name: tensor.detach().clone().contiguous()
        for name, tensor in plain_hf_model(model).state_dict().items()
    }


def save_model(model, out_dir: str | Path, *, provenance: dict | None = None) -> Path:
    """Write the model and its tokenizer to ``out_dir``; the result loads with ``load_model(out_dir)``
    and with plain ``transformers``. float64 models are written as float32. ``provenance`` (e.g. the
    run and step the weights come from) is written to ``circuitviz.json`` beside them."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = plain_hf_model(model)
    if model.dtype == torch.float64:
        plain = plain.to(torch.float32)  # new tensors for this copy only; the bridge keeps float64
    plain.generation_config = model.hf_model.generation_config
    plain.save_pretrained(out)
    model.tokenizer.save_pretrained(out)
    if provenance is not None:
        (out / PROVENANCE_FILE).write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    _readable_as_umask_allows(out)
    return out


def _readable_as_umask_allows(directory: Path) -> None:
    """Give every file the mode a plain ``open`` would (transformers writes the weights 0600, so a
    model exported for others could not be read by them)."""
    umask = os.umask(0)
    os.umask(umask)
    for path in directory.iterdir():
        if path.is_file():
            path.chmod(0o666 & ~umask)

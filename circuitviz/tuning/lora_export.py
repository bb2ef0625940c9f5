"""A LoRA or circuit-LoRA run's adapters as a peft adapter directory (``export-model --adapter-only``).

``peft.PeftModel.from_pretrained(base, DIR)`` on the plain Hugging Face base model then computes
what ``run:RUN`` computes. How circuitviz's factors (``lora``) become peft's ``lora_A [R, in]`` and
``lora_B [out, R]`` per Hugging Face module:

1. One unit (plain LoRA, or a whole MLP tensor): the factors as they are, R = rank.
2. Units along the output side (a head's q/k/v rows, a neuron group's up/gate rows): ``A`` stacks
   the units' ``A`` (R = units x rank) and ``B`` is block-diagonal, unit u's rows reading only
   unit u's rank slice, so ``B @ A`` is exactly the per-unit update.
3. Units along the input side (o's head columns, down's neuron-group columns): the mirror image,
   ``A`` block-diagonal over the input columns and ``B`` the units' ``B`` side by side.
4. GPT-2's q, k and v are views of one fused ``c_attn`` module: their factors are joined the same
   way (``A`` stacked, ``B`` block-diagonal over the three output blocks); ``attn.o`` is ``c_proj``.

peft scales each module by ``alpha_m / R_m``; a module whose R_m differs from the run's rank gets
``rank_pattern`` / ``alpha_pattern`` entries with ``alpha_m = alpha * R_m / rank``, keeping the
run's scale ``alpha / rank``. Every entry is written by peft itself (``save_pretrained``).
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch

from circuitviz.tuning.lora import AdapterLayout, is_transposed, layout_of, weight_modules

ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors")
_FUSED = {"attn.q": 0, "attn.k": 1, "attn.v": 2}  # GPT-2's views of attn.c_attn


def expand(layout: AdapterLayout, a: torch.Tensor, b: torch.Tensor):
    """Per-unit factors -> one ``(A [R, in], B [out, R])`` pair with the same ``B @ A``."""
    n = layout.n_units
    if n == 1:
        return a[0], b[0]
    if layout.side == "out":
        return torch.cat(list(a), dim=0), torch.block_diag(*b)
    return torch.block_diag(*a), torch.cat(list(b), dim=1)


def _hf_module(name: str, modules: set[str]) -> tuple[str, int | None]:
    """(Hugging Face module, slot in a fused module or None) of a canonical weight name."""
    module = name.removesuffix(".weight")
    if module in modules:
        return module, None
    stem, _, tail = module.rpartition(".attn.")
    key = f"attn.{tail}"
    if key == "attn.o" and f"{stem}.attn.c_proj" in modules:
        return f"{stem}.attn.c_proj", None
    if key in _FUSED and f"{stem}.attn.c_attn" in modules:
        return f"{stem}.attn.c_attn", _FUSED[key]
    raise ValueError(f"no Hugging Face module computes {name}; cannot export its adapter")


def _fuse(slots: dict[int, tuple[torch.Tensor, torch.Tensor]], d_in: int, d_part: int, like):
    """q/k/v factor pairs -> one pair for the fused projection (missing slots get rank 0)."""
    a_parts, b_parts = [], []
    for slot in range(3):
        a, b = slots.get(slot, (like.new_zeros(0, d_in), like.new_zeros(d_part, 0)))
        a_parts.append(a)
        b_parts.append(b)
    return torch.cat(a_parts, dim=0), torch.block_diag(*b_parts)


def peft_factors(model, pairs: dict) -> dict[str, tuple[torch.Tensor, torch.Tensor, bool]]:
    """Hugging Face module -> (lora_A, lora_B, stored transposed) for a run's factor ``pairs``."""
    from circuitviz.models.plain import plain_hf_model

    plain = plain_hf_model(model)
    names = {name for name, _ in plain.named_modules()}
    bridge_modules = weight_modules(model)
    whole: dict[str, tuple[torch.Tensor, torch.Tensor, bool]] = {}
    fused: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
    shapes: dict[str, tuple[int, int, bool]] = {}
    for name, (a, b) in pairs.items():
        module = bridge_modules[name]
        layout = layout_of(name, a, b, module.weight.shape, is_transposed(module))
        big_a, big_b = expand(layout, a.detach().cpu(), b.detach().cpu())
        target, slot = _hf_module(name, names)
        if slot is None:
            whole[target] = (big_a, big_b, is_transposed(plain.get_submodule(target)))
        else:
            fused.setdefault(target, {})[slot] = (big_a, big_b)
            shapes[target] = (layout.d_in, layout.d_out, True)
    for target, slots in fused.items():
        d_in, d_part, transposed = shapes[target]
        like = next(iter(slots.values()))[0]
        a, b = _fuse(slots, d_in, d_part, like)
        whole[target] = (a, b, transposed)
    return whole


def save_peft_adapter(
    model,
    pairs: dict,
    out_dir: Path,
    *,
    rank: int,
    alpha: float,
    dropout: float,
    base_model: str,
    provenance: dict,
) -> list[str]:
    """Write ``pairs`` (weight name -> (A, B)) as a peft LoRA adapter for ``model``'s Hugging
    Face form. Returns the files written."""
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError as exc:
        raise ValueError(
            "writing a peft adapter needs the peft package: pip install 'circuitviz[lora]' "
            "(./run.sh installs it)"
        ) from exc
    from circuitviz.models.plain import plain_hf_model

    factors = peft_factors(model, pairs)
    ranks = {name: a.shape[0] for name, (a, _, _) in factors.items()}
    odd = {name: r for name, r in ranks.items() if r != rank}
    config = LoraConfig(
        r=rank,
        lora_alpha=alpha,
        lora_dropout=dropout,
        target_modules=sorted(factors),
        fan_in_fan_out=any(t for _, _, t in factors.values()),
        rank_pattern={re.escape(name): r for name, r in odd.items()},
        alpha_pattern={re.escape(name): alpha * r / rank for name, r in odd.items()},
        base_model_name_or_path=base_model,
        task_type="CAUSAL_LM",
    )
    plain = plain_hf_model(model)
    plain.name_or_path = base_model  # what peft records as the base model
    peft_model = get_peft_model(plain, config)
    with torch.no_grad():
        for name, (a, b, _) in factors.items():
            layer = peft_model.base_model.model.get_submodule(name)
            layer.lora_A["default"].weight.copy_(a)
            layer.lora_B["default"].weight.copy_(b)
    out_dir.mkdir(parents=True, exist_ok=True)
    peft_model.save_pretrained(out_dir, save_embedding_layers=False)
    (out_dir / "circuitviz.json").write_text(json.dumps(provenance, indent=2, default=str) + "\n")
    return sorted(path.name for path in out_dir.iterdir())

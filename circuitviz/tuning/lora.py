"""Low-rank adapters on a bridged model: LoRA (Hu et al. 2021, arXiv:2106.09685) and circuit-LoRA,
the same adapters with every update restricted to the circuit re-discovered every K steps.

A projection's weight ``W`` (stored ``[out, in]`` by ``nn.Linear``, ``[in, out]`` by GPT-2's
``Conv1D``) gets the update ``dW = s * B @ A`` with ``s = alpha / R`` (peft's convention, R the
rank). For circuit-LoRA the projection is cut into the units the node mask bank already knows
(``masks``): a head's rows (q/k/v) or columns (o), a key/value group, a whole MLP tensor, or an
MLP neuron group's rows or columns. Each unit gets its own factors of rank ``ceil(R / U)``, so that
a unit's slice of ``dW`` depends on its own factors only: with one shared ``A``, training any
head would move every other head's rows of ``B @ A``. Plain LoRA is the one-unit case.
Factors are stacked along a leading unit axis (in ``y = x W^T`` orientation, peft's ``lora_A`` /
``lora_B``)::

    units along the output side: A [unit, rank, in],          B [unit, out / unit, rank]
    units along the input side:  A [unit, rank, in / unit],   B [unit, out, rank]
    dW[(unit out), in] or dW[out, (unit in)] = s * sum_rank B[unit, out, rank] A[unit, rank, in]

so a node's trainable set is a ``RowMask`` over axis 0 of its tensors' factors, and the masked
optimizer (``optim``) keeps every other unit's factors, hence its slice of ``dW``, bit-identical.

Why not peft's layers: they replace the projection's forward, but with the attribution hooks on
(``use_split_qkv_input``, ``use_attn_result``) the bridge reads each attention projection's
``weight`` directly and never calls its forward (checked on GPT-2 and Llama shapes), so a
peft-wrapped model would be attributed, snapshotted and scored as the base model. Instead:

1. Build the factors: ``A`` as peft initialises it (Kaiming-uniform, bound ``1/sqrt(fan_in)``,
   from the run's seed), ``B`` zero, so the adapted model starts as the base model.
2. Outside training steps every projection whose adapters have ever been trained holds the merged
   weight ``W0 + dW`` in the model's own tensor (``W0`` is kept aside the first time). Attribution,
   snapshots, evaluation, generation, the head-change meter and ``run:`` loading therefore see the
   adapted model without knowing about adapters.
3. A training step (``training_pass``): the projections trained this step get ``W0`` back, and a
   forward hook on each adds ``s * B(A(dropout(x)))`` unit by unit (peft's forward); a hook on
   the whole model checks that every one of them ran. After the backward and the masked optimizer
   step the changed projections are merged again. Projections frozen this step stay merged.
4. Checkpoints hold the factors as ``param/<weight>:lora_A`` / ``:lora_B`` (``AdapterMerger`` puts
   them back onto a base model's weights); ``lora_export`` writes them as a peft adapter directory.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import torch
from einops import einsum, rearrange

from circuitviz.models.params import canonical_name
from circuitviz.tuning.masks import Masks, NodeMaskBank, RowMask

A_SUFFIX, B_SUFFIX = ":lora_A", ":lora_B"


@dataclass(frozen=True, kw_only=True)
class AdapterLayout:
    """How one projection's update is factored (see the module docstring)."""

    name: str  # canonical weight name, e.g. model.layers.0.self_attn.q_proj.weight
    transposed: bool  # the weight is stored [in, out] (Conv1D)
    side: str  # "out" or "in": which side the units cut
    n_units: int
    rank: int  # per unit
    d_in: int
    d_out: int

    @property
    def a_shape(self) -> tuple[int, int, int]:
        d_in = self.d_in // self.n_units if self.side == "in" else self.d_in
        return (self.n_units, self.rank, d_in)

    @property
    def b_shape(self) -> tuple[int, int, int]:
        d_out = self.d_out // self.n_units if self.side == "out" else self.d_out
        return (self.n_units, d_out, self.rank)

    def delta(self, a: torch.Tensor, b: torch.Tensor, scale: float) -> torch.Tensor:
        """``s * B @ A`` in the stored weight's orientation. Each unit's block is its own batched
        product (never a sum across units), so a unit whose factors did not change gets the same
        bits every time."""
        blocks = einsum(b, a, "unit d_out rank, unit rank d_in -> unit d_out d_in")
        if self.side == "out":
            delta = rearrange(blocks, "unit d_out d_in -> (unit d_out) d_in")
        else:
            delta = rearrange(blocks, "unit d_out d_in -> d_out (unit d_in)")
        delta = delta * scale
        return delta.T if self.transposed else delta

    def forward_delta(self, x: torch.Tensor, a: torch.Tensor, b: torch.Tensor, scale: float):
        """``s * x A^T B^T`` unit by unit: x ``[..., d_in]`` -> ``[..., d_out]``."""
        if self.side == "out":
            hidden = einsum(x, a, "... d_in, unit rank d_in -> ... unit rank")
            out = einsum(hidden, b, "... unit rank, unit d_out rank -> ... unit d_out")
            out = rearrange(out, "... unit d_out -> ... (unit d_out)")
        else:
            parts = rearrange(x, "... (unit d_in) -> ... unit d_in", unit=self.n_units)
            hidden = einsum(parts, a, "... unit d_in, unit rank d_in -> ... unit rank")
            out = einsum(hidden, b, "... unit rank, unit d_out rank -> ... d_out")
        return out * scale


def layout_of(name: str, a: torch.Tensor, b: torch.Tensor, weight, transposed: bool):
    """The layout of stored factors ``a`` ``[unit, rank, *]`` and ``b`` ``[unit, *, rank]`` for a
    weight of shape ``weight`` (the side is read off the shapes; one unit has no side). Raises
    ValueError when they do not factor the weight."""
    d0, d1 = tuple(weight)
    d_out, d_in = (d1, d0) if transposed else (d0, d1)
    n_units, rank = a.shape[0], a.shape[1]
    side = "out" if a.shape[2] == d_in else "in"
    layout = AdapterLayout(
        name=name,
        transposed=transposed,
        side=side,
        n_units=n_units,
        rank=rank,
        d_in=d_in,
        d_out=d_out,
    )
    if tuple(a.shape) != layout.a_shape or tuple(b.shape) != layout.b_shape:
        raise ValueError(
            f"adapter factors of {name} have shapes {tuple(a.shape)} and {tuple(b.shape)}, which "
            f"do not factor its {d_out} x {d_in} weight"
        )
    return layout


def target_names(family: str, n_layers: int, targets: tuple[str, ...]) -> list[str]:
    """Canonical weight names of the projections ``targets`` names (q, k, v, o, up, gate, down),
    layer by layer; a name the family lacks (GPT-2 has no gate) is skipped."""
    from circuitviz.models.mlp import mlp_layout
    from circuitviz.models.params import _RULES

    if family not in _RULES:
        raise NotImplementedError(f"no adapter targets for model family {family!r}")
    rules, mlp = _RULES[family], mlp_layout(family)
    templates = {
        "q": rules["q"][0][0],
        "k": rules["k"][0][0],
        "v": rules["v"][0][0],
        "o": rules["out"][0][0],
        "up": mlp.in_weight,
        "gate": mlp.gate_weight,
        "down": mlp.out_weight,
    }
    return [
        templates[t].format(L=layer)
        for layer in range(n_layers)
        for t in targets
        if templates[t] is not None
    ]


def weight_modules(model) -> dict[str, torch.nn.Module]:
    """Canonical weight name -> the module whose forward computes with it."""
    out: dict[str, torch.nn.Module] = {}
    for raw, _ in model.bridge.named_parameters():
        owner, _, attr = raw.rpartition(".")
        if attr == "weight":
            out.setdefault(canonical_name(raw), model.bridge.get_submodule(owner))
    return out


def is_transposed(module: torch.nn.Module) -> bool:
    """Conv1D (GPT-2) stores ``[in, out]``; the bridge's attention reads it the same way."""
    return type(module).__name__ == "Conv1D"


@dataclass(frozen=True, kw_only=True)
class _Target:
    layout: AdapterLayout
    weight: torch.nn.Parameter = field(repr=False)
    module: torch.nn.Module = field(repr=False)
    bank_units: tuple[int, int] | None  # this tensor's [first, end) units in the mask bank


class AdapterSet:
    """The adapters of one run, the merged weights they imply, and the training pass."""

    def __init__(self, model, bank: NodeMaskBank, config, *, per_unit: bool) -> None:
        self.scale = config.lora_alpha / config.lora_rank
        self.dropout = config.lora_dropout
        self.targets: dict[str, _Target] = {}
        self.params: dict[str, torch.nn.Parameter] = {}
        self.base: dict[str, torch.Tensor] = {}  # W0 of every projection merged so far
        modules = weight_modules(model)
        names = target_names(model.info.family, model.info.n_layers, config.lora_target_names())
        index = {name: i for i, name in enumerate(bank.param_names)}
        generator = torch.Generator().manual_seed(config.seed)
        for name in names:
            if per_unit and name not in index:
                continue  # no node owns it: circuit-LoRA can never train it
            weight = modules[name].weight
            units = None
            if name in index:
                i = index[name]
                units = (bank.unit_offsets[i], bank.unit_offsets[i + 1])
            layout = _layout(name, weight, modules[name], bank, index.get(name), per_unit, config)
            self.targets[name] = _Target(
                layout=layout, weight=weight, module=modules[name], bank_units=units
            )
            self.params[name + A_SUFFIX] = _init_a(layout, weight, generator)
            self.params[name + B_SUFFIX] = torch.nn.Parameter(
                torch.zeros(layout.b_shape, dtype=weight.dtype, device=weight.device)
            )
        if not self.targets:
            raise ValueError(
                f"--lora-targets {config.lora_targets} names no projection of this "
                f"{model.info.family} model"
            )
        self.per_unit = per_unit
        self.root = model.bridge
        self.n_params = sum(p.numel() for p in self.params.values())

    # -- which entries train ---------------------------------------------------------------------
    def masks(self, bank_units: torch.Tensor | None) -> Masks:
        """The trainable factors: all of them (``None``: plain LoRA), else the units of
        ``bank_units`` (boolean ``[n_units]`` of the mask bank, as ``NodeMaskBank.units``)."""
        out: Masks = {}
        for name, target in self.targets.items():
            if bank_units is None or not self.per_unit:
                keep = None
            else:
                first, end = target.bank_units
                unit_keep = bank_units[first:end]
                if not bool(unit_keep.any()):
                    continue
                keep = (
                    None
                    if bool(unit_keep.all())
                    else RowMask(0, unit_keep.to(target.weight.device))
                )
            out[name + A_SUFFIX] = keep
            out[name + B_SUFFIX] = keep
        return out

    def count(self, masks: Masks) -> dict[str, int]:
        """``whole``: every factor of a projection with anything trainable; ``exact``: the
        trainable factor entries (the tuned-parameter count)."""
        whole = exact = 0
        for name, mask in masks.items():
            numel = self.params[name].numel()
            whole += numel
            exact += numel if mask is None else numel // mask.keep.numel() * int(mask.keep.sum())
        return {"whole": whole, "exact": exact}

    # -- merged weights --------------------------------------------------------------------------
    @torch.no_grad()
    def merge(self, names) -> None:
        """Write ``W0 + dW`` into each projection of ``names`` (its ``W0`` kept the first time)."""
        for name in names:
            target = self.targets[name]
            if name not in self.base:
                self.base[name] = target.weight.detach().clone()
            a, b = self.params[name + A_SUFFIX], self.params[name + B_SUFFIX]
            if not bool(b.any()):  # nothing learnt yet: W0 itself (W0 + 0 turns -0.0 into 0.0)
                target.weight.copy_(self.base[name])
                continue
            target.weight.copy_(self.base[name] + target.layout.delta(a, b, self.scale))

    @torch.no_grad()
    def unmerge(self, names) -> None:
        """Put ``W0`` back into each projection of ``names`` (bit for bit)."""
        for name in names:
            if name in self.base:
                self.targets[name].weight.copy_(self.base[name])

    def merged_names(self) -> list[str]:
        return list(self.base)

    @contextmanager
    def training_pass(self, masks: Masks, *, seed: int = 0) -> Iterator[None]:
        """One training step's forward, backward and optimizer step (module docstring, step 3).
        Dropout masks come from a generator seeded with ``seed`` (the loop passes one per step),
        so a run, and a resumed run, draws the same masks whatever else used torch's RNG."""
        names = [name for name in self.targets if name + A_SUFFIX in masks]
        self.unmerge(names)
        fired: set[str] = set()
        device = next(iter(self.params.values())).device
        generator = torch.Generator(device=device).manual_seed(seed)
        handles = [
            self.targets[name].module.register_forward_hook(self._hook(name, fired, generator))
            for name in names
        ]
        handles.append(self.root.register_forward_hook(self._check(names, fired)))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
            self.merge(names)

    def _hook(self, name: str, fired: set[str], generator: torch.Generator):
        target = self.targets[name]
        a, b = self.params[name + A_SUFFIX], self.params[name + B_SUFFIX]
        p = self.dropout

        def hook(module, inputs, output):
            fired.add(name)
            x = inputs[0]
            if p > 0:  # inverted dropout, as torch's, with the step's own generator
                draw = torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = x * (draw >= p) / (1.0 - p)
            return output + target.layout.forward_delta(x, a, b, self.scale)

        return hook

    def _check(self, names: list[str], fired: set[str]):
        def check(module, inputs, output):
            missing = [name for name in names if name not in fired]
            if missing:
                raise RuntimeError(
                    f"the model computed {missing[0]} (and {len(missing) - 1} more) without "
                    "calling its module, so its adapter would not train; run training forwards "
                    "with the attribution hook flags off"
                )
            fired.clear()

        return check


def _layout(name, weight, module, bank, i, per_unit: bool, config) -> AdapterLayout:
    transposed = is_transposed(module)
    d0, d1 = weight.shape
    d_out, d_in = (d1, d0) if transposed else (d0, d1)
    n_units, side = 1, "out"
    if per_unit and i is not None:
        first, end = bank.unit_offsets[i], bank.unit_offsets[i + 1]
        rows = bank.unit_rows[first:end]
        n_units = end - first
        if n_units > 1 and bool((rows != rows[0]).any()):
            raise ValueError(f"{name} is cut into units of unequal size: {rows.tolist()}")
        stored_dim = bank.param_dims[i]
        side = "out" if (stored_dim == 0) != transposed else "in"
    rank = math.ceil(config.lora_rank / n_units)
    return AdapterLayout(
        name=name,
        transposed=transposed,
        side=side,
        n_units=n_units,
        rank=rank,
        d_in=d_in,
        d_out=d_out,
    )


def _init_a(layout: AdapterLayout, weight, generator: torch.Generator) -> torch.nn.Parameter:
    """peft's ``lora_A`` initialisation: Kaiming-uniform with a = sqrt(5), i.e. uniform on
    ``[-1/sqrt(fan_in), 1/sqrt(fan_in)]``, drawn on the CPU from the run's seed."""
    shape = layout.a_shape
    bound = 1.0 / math.sqrt(shape[2])
    values = (torch.rand(shape, generator=generator, dtype=torch.float64) * 2 - 1) * bound
    return torch.nn.Parameter(values.to(device=weight.device, dtype=weight.dtype))


def split_adapters(tensors: dict) -> tuple[dict, dict[str, tuple[torch.Tensor, torch.Tensor]]]:
    """(plain tensors, {weight name: (A, B)}) of a checkpoint's ``param/`` tensors (keys without
    the prefix). A factor without its partner is an error."""
    plain, factors = {}, {}
    for key, value in tensors.items():
        if key.endswith((A_SUFFIX, B_SUFFIX)):
            name, _, which = key.rpartition(":")
            factors.setdefault(name, {})[which] = value
        else:
            plain[key] = value
    pairs = {}
    for name, found in factors.items():
        if set(found) != {"lora_A", "lora_B"}:
            raise ValueError(f"the checkpoint has only {sorted(found)} of {name}'s adapter")
        pairs[name] = (found["lora_A"], found["lora_B"])
    return plain, pairs


class AdapterMerger:
    """Writes checkpoint factors onto a model's weights as ``W0 + s * dW``, where ``W0`` is each
    weight as it was the first time this merger touched it, so checkpoints of one run can be
    applied one after another (``rescore``) or once onto a freshly loaded base model (``run:``)."""

    def __init__(self, model, scale: float) -> None:
        self.modules = weight_modules(model)
        self.scale = scale
        self.base: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    def apply(self, pairs: dict[str, tuple[torch.Tensor, torch.Tensor]]) -> int:
        for name, (a, b) in pairs.items():
            if name not in self.modules:
                raise ValueError(f"the checkpoint adapts {name}, which this model does not have")
            module = self.modules[name]
            weight = module.weight
            layout = layout_of(name, a, b, weight.shape, is_transposed(module))
            if name not in self.base:
                self.base[name] = weight.detach().clone()
            if not bool(b.any()):  # never trained: W0 itself (W0 + 0 would turn -0.0 into 0.0)
                weight.copy_(self.base[name])
                continue
            a, b = (t.to(weight.device, weight.dtype) for t in (a, b))
            weight.copy_(self.base[name] + layout.delta(a, b, self.scale))
        return 2 * len(pairs)

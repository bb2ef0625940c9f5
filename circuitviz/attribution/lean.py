"""Gradients at the heads' q/k/v inputs without a per-head copy of the residual stream.

A head's q (k, v) destination reads the residual stream ``x`` of its layer through the layer's
norm and its own rows of the projection: ``q_h = norm(x) W_h^T + b_h``. The bridge can give every
head its own copy of ``x`` (``use_split_qkv_input``) so that autograd delivers each copy's
gradient, but then every forward and backward normalises ``x`` once per head and projection:
most of an attribution pass's cost on a small model, and the reason that flag is off everywhere
else. The gradient of one copy has a closed form in what an ordinary forward has anyway:

    dL/dx_h = J_norm(x)^T (W_h^T dL/dq_h),

with ``dL/dq_h`` the gradient at the projection's output (``attn.q.hook_out``, ``[batch, pos,
head, d_head]``, before any rotary embedding) and ``J_norm(x)^T`` the vector-Jacobian product of
the layer's own norm module at ``x`` (``ln1.hook_in``). ``NormJacobian`` computes it for every
head at once: in closed form for LayerNorm and the Llama-family RMSNorms, from statistics of ``x``
taken once per layer, and by autograd through the norm module itself for any other norm. It
equals the per-head-copy gradient to rounding; the finite-difference oracle tests of ``eap`` and a
test against the copies check the scores it gives.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field

import torch
from einops import einsum, rearrange

from circuitviz.attribution.hooks import DestHook

QKV = ("q", "k", "v")

# Per bridge: {(layer, which): (module, attribute, heads)} of each projection weight.
_WEIGHTS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class LeanDest:
    """A q/k/v destination read the lean way: where ``x`` and the projection's output are hooked."""

    spec: DestHook
    layer: int
    which: str  # q, k or v
    norm: torch.nn.Module = field(repr=False)
    projection: tuple = field(repr=False)  # (module, attribute, heads) of the projection weight

    @property
    def weight(self) -> torch.Tensor:
        """The projection weight ``[n, d_head, d_model]`` as the module holds it now: looked up at
        each use, since a sharded model (FSDP) swaps in the whole tensor only for the duration of
        its block's forward and backward, when the hooks read it."""
        module, attribute, n = self.projection
        weight = getattr(module, attribute)
        return weight.view(n, weight.shape[0] // n, weight.shape[1])

    @property
    def input_hook(self) -> str:
        return f"blocks.{self.layer}.ln1.hook_in"

    @property
    def output_hook(self) -> str:
        return f"blocks.{self.layer}.attn.{self.which}.hook_out"


def qkv_kind(spec: DestHook) -> tuple[int, str] | None:
    """(layer, q|k|v) of a head-input destination hook, None for any other."""
    parts = spec.hook_name.split(".")
    if spec.groups is not None or len(parts) != 4 or parts[2] != "attn":
        return None
    which = parts[3].removeprefix("hook_").removesuffix("_input")
    return (int(parts[1]), which) if which in QKV else None


def lean_dests(model, dests: list[DestHook]) -> dict[str, LeanDest] | None:
    """Hook name -> ``LeanDest`` for every q/k/v destination among ``dests``; None for a model
    family whose projection weights circuitviz does not know (it then takes per-head copies)."""
    from circuitviz.models.params import projection_weight_name

    if projection_weight_name(model.info.family, "q", 0) is None:
        return None
    out = {}
    for spec in dests:
        kind = qkv_kind(spec)
        if kind is None:
            continue
        layer, which = kind
        out[spec.hook_name] = LeanDest(
            spec=spec,
            layer=layer,
            which=which,
            norm=model.bridge.blocks[layer].ln1.original_component,
            projection=_projection(model, layer, which),
        )
    return out


def _projection(model, layer: int, which: str) -> tuple:
    from circuitviz.models.params import canonical_name, projection_weight_name

    cache = _WEIGHTS.setdefault(model.bridge, {})
    if not cache:
        params = {canonical_name(n): (n, p) for n, p in model.bridge.named_parameters()}
        info = model.info
        for lay in range(info.n_layers):
            for kind in QKV:
                n = info.n_heads if kind == "q" else info.n_kv_heads
                name, weight = params[projection_weight_name(info.family, kind, lay)]
                if tuple(weight.shape) != (n * info.d_head, info.d_model):
                    raise RuntimeError(
                        f"layer {lay} {kind} projection weight has shape {tuple(weight.shape)}, "
                        f"expected ({n * info.d_head}, {info.d_model})"
                    )
                owner, _, attribute = name.rpartition(".")
                cache[(lay, kind)] = (model.bridge.get_submodule(owner), attribute, n)
    return cache[(layer, which)]


class NormJacobian:
    """The vector-Jacobian product of a norm module at one input ``x`` ``[batch, pos, d_model]``,
    for the cotangents a projection's output gradient makes (one per head). LayerNorm and the
    Llama-family RMSNorms in closed form, from statistics of ``x`` computed once; any other norm by
    autograd through the module itself."""

    def __init__(self, norm: torch.nn.Module, x: torch.Tensor) -> None:
        self.norm, self.x = norm, x
        self.kind = _norm_kind(norm)
        self._stats: tuple[torch.Tensor, torch.Tensor] | None = None

    def _statistics(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(normalised x ``[batch, pos, d_model]``, 1 / scale ``[batch, pos, 1]``), in float32 at
        least."""
        if self._stats is None:
            x = self.x.to(torch.promote_types(self.x.dtype, torch.float32))
            if self.kind == "layer":
                x = x - x.mean(-1, keepdim=True)
            eps = self.norm.eps if self.kind == "layer" else self.norm.variance_epsilon
            rstd = torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps)
            self._stats = (x * rstd, rstd)
        return self._stats

    def projected_vjp(self, grad_out: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """``vjp`` of the cotangents ``grad_out @ weight`` (``grad_out`` ``[batch, pos, n, e]``,
        ``weight`` ``[n, e, d_model]``), head-major ``[n, batch, pos, d_model]`` (the layout the
        product makes and the scores read, so nothing is copied to reorder it). The norm's weight
        is folded into ``weight`` and its 1 / scale into ``grad_out`` (both small) before the
        product, and the centring is done in place: five passes over the result where the
        textbook formula takes ten (a quarter of a demo-model attribution backward over every
        position)."""
        if self.kind is None:
            at_normed = einsum(
                grad_out,
                weight.to(grad_out.dtype),
                "batch pos n e, n e d_model -> batch pos n d_model",
            )
            with torch.enable_grad():
                copies = self.x.unsqueeze(-2).expand_as(at_normed).requires_grad_(True)
                (grad,) = torch.autograd.grad(self.norm(copies), copies, at_normed)
            return rearrange(grad, "batch pos n d_model -> n batch pos d_model")
        _, rstd = self._statistics()
        weight = weight.detach().to(rstd.dtype)
        if self.norm.weight is not None:
            weight = weight * self.norm.weight.detach().to(rstd.dtype)
        g = einsum(
            grad_out.to(rstd.dtype) * rstd[..., None],
            weight,
            "batch pos n e, n e d_model -> n batch pos d_model",
        )
        return self._centre(g).to(grad_out.dtype)

    def _centre(self, g: torch.Tensor) -> torch.Tensor:
        """``g - mean(g) - xhat * mean(g * xhat)`` over d_model (RMSNorm: no mean term), in place:
        the Jacobian's transpose once the weight and 1 / scale are in ``g``."""
        xhat, _ = self._statistics()
        along = einsum(g, xhat, "n batch pos d_model, batch pos d_model -> n batch pos")
        if self.kind == "layer":
            g.sub_(g.mean(-1, keepdim=True))
        return g.addcmul_(xhat, along[..., None], value=-1.0 / g.shape[-1])


_RMS_NORMS = ("LlamaRMSNorm", "MistralRMSNorm", "Qwen2RMSNorm")


def _norm_kind(norm: torch.nn.Module) -> str | None:
    if isinstance(norm, torch.nn.LayerNorm) and len(norm.normalized_shape) == 1:
        return "layer"
    if type(norm).__name__ in _RMS_NORMS and hasattr(norm, "variance_epsilon"):
        return "rms"
    return None


def input_gradient(dest: LeanDest, x: NormJacobian, grad_out: torch.Tensor) -> torch.Tensor:
    """The gradient at each head's own copy of its input, head-major ``[head, batch, pos,
    d_model]``, from the norm's Jacobian at the layer's input ``x`` and the gradient at the
    projection's output ``grad_out`` ``[batch, pos, head, d_head]``."""
    return x.projected_vjp(grad_out, dest.weight)

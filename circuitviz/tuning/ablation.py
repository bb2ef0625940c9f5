"""Circuit-only training forwards (``TuneConfig.circuit_forward``): every edge outside the circuit
is mean-ablated while gradients flow through the rest.

The paper never ablates the forward pass (the circuit only restricts which parameters move); this is
the stricter variant. In one forward over the training text:

1. a no-grad forward of the unablated model gives each source's mean activation over the batch's
   real tokens (the mean-ablation baseline, as the paper's mean ablation);
2. in the training forward each source hook keeps ``delta_u = a_u - mean_u``, node-major
   ``[n, batch, pos, d_model]``;
3. each destination hook subtracts the deltas of its ablated incoming edges with one einsum,
   ``x_d <- x_d - sum_{u -> d not in circuit} delta_u``, so d sees the mean along ablated edges
   and the live activation along kept ones.

Deltas are kept as a list of tensors (concatenated when a destination reads them) rather than
written into one buffer, because autograd must not see a saved tensor modified in place.
"""

from __future__ import annotations

from types import SimpleNamespace

import torch

from circuitviz.attribution.activations import source_means
from circuitviz.attribution.hooks import edge_ablation_hooks
from circuitviz.graph.topology import Graph
from circuitviz.tuning.discovery import hook_flags


def run_circuit_forward(
    model, graph: Graph, edge_mask: torch.Tensor, ids: torch.Tensor, token_mask: torch.Tensor
) -> torch.Tensor:
    """Logits ``[batch, pos, d_vocab]`` of ``ids`` with every valid edge outside ``edge_mask``
    ([n_src, n_dst] bool) mean-ablated; differentiable in the parameters."""
    token_mask = token_mask.to(model.device)
    with hook_flags(model.bridge, True):
        clean = SimpleNamespace(clean_ids=ids, attention_mask=token_mask)
        means = source_means(model, graph, [clean]).sources  # [n_src, d_model]
    ablated = (graph.valid_mask & ~edge_mask.cpu()).to(model.device, model.dtype)
    deltas: list[torch.Tensor] = []

    def record(spec, rows):
        deltas.append(rows - means[spec.src_slice, None, None, :])

    fwd, fired = edge_ablation_hooks(
        graph, ablated, record, lambda n_up: torch.cat(deltas)[:n_up], model
    )
    with hook_flags(model.bridge, True), model.bridge.hooks(fwd_hooks=fwd):
        logits = model.bridge(ids, attention_mask=token_mask)
    fired.verify("circuit-only forward")
    return logits

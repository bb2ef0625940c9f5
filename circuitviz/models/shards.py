"""Tensors that may be sharded across processes (FSDP's ``DTensor`` parameters), read and written
as the whole tensors the rest of the loop reasons about.

Under ``--shard fsdp`` (``circuitviz.tuning.sharded``) every parameter, its gradient and its
optimizer state is a ``DTensor`` split along one dimension, each process holding a contiguous
block of rows (``torch.chunk``'s split). The masked optimizer, the head-change records and the
checkpoints work on whole tensors or on rows of them; these helpers give them that view:

- ``whole``: the whole tensor (a collective: every process calls it, in the same order);
- ``assign``: write a whole tensor into a (possibly sharded) one;
- ``local_rows``: the local block and which of the whole tensor's rows along a dimension it holds;
- ``row_sums_of_squares``: per-row sums of squares of the whole tensor, from the local blocks;
- ``storage_key``: what identifies a tensor's storage, to count tied weights once.

On plain tensors each is the obvious identity, so one process pays nothing.
"""

from __future__ import annotations

import torch


def is_sharded(tensor: torch.Tensor) -> bool:
    from torch.distributed.tensor import DTensor

    return isinstance(tensor, DTensor)


def whole(tensor: torch.Tensor, *, cpu: bool = False) -> torch.Tensor:
    """The whole tensor (gathered from every process when sharded), detached. ``cpu``: a sharded
    tensor's gathered copy goes to the CPU at once, so the device holds one whole tensor at a time
    (checkpoints gather every trainable tensor and its optimizer state)."""
    tensor = tensor.detach()
    if not is_sharded(tensor):
        return tensor
    gathered = tensor.full_tensor()
    return gathered.cpu() if cpu else gathered


@torch.no_grad()
def assign(target: torch.Tensor, value: torch.Tensor) -> None:
    """``target.copy_(value)`` for a whole ``value``, also when ``target`` is sharded."""
    dim = _shard_dim(target) if is_sharded(target) else None
    if dim is None:  # plain, or a replicated DTensor: every process holds all of it
        (target.to_local() if is_sharded(target) else target).copy_(value)
        return
    block, rows = local_rows(target, dim)
    index = [slice(None)] * value.ndim
    index[dim] = rows
    block.copy_(value[tuple(index)])  # only this process's rows travel to its device


def like(reference: torch.Tensor, value: torch.Tensor) -> torch.Tensor:
    """A new tensor holding ``value`` (whole, shaped like ``reference``), split as ``reference`` is
    (each process keeps its own rows of ``value``; nothing is communicated)."""
    if not is_sharded(reference):
        return value.to(reference.device, reference.dtype).clone()
    from torch.distributed.tensor import DTensor

    dim = _shard_dim(reference)
    index = [slice(None)] * value.ndim
    if dim is not None:
        index[dim] = local_rows(reference, dim)[1]
    # Slice first: only this process's rows travel to its device.
    local = value[tuple(index)].to(reference.device, reference.dtype).clone()
    return DTensor.from_local(
        local,
        reference.device_mesh,
        reference.placements,
        run_check=False,
        shape=reference.shape,
        stride=reference.stride(),
    )


def _shard_dim(tensor: torch.Tensor) -> int | None:
    """The dimension a sharded tensor is split along (None: replicated or plain)."""
    from torch.distributed.tensor import Shard

    for placement in tensor.placements:
        if isinstance(placement, Shard):
            return placement.dim
    return None


def local_rows(tensor: torch.Tensor, dim: int) -> tuple[torch.Tensor, slice]:
    """(the local block of ``tensor``, the rows along ``dim`` of the whole tensor it holds).

    A plain tensor is its own block and holds every row. A sharded one holds ``torch.chunk``'s
    share of its split dimension: chunks of ``ceil(n / world)`` rows, the last ones shorter or
    empty. The block is the process's own storage: writing it writes the parameter."""
    if not is_sharded(tensor):
        return tensor, slice(0, tensor.shape[dim] if tensor.ndim else 1)
    block = tensor.to_local()
    if _shard_dim(tensor) != dim:
        return block, slice(0, tensor.shape[dim])
    n, world = tensor.shape[dim], tensor.device_mesh.size()
    chunk = -(-n // world)
    start = min(tensor.device_mesh.get_local_rank() * chunk, n)
    stop = min(start + chunk, n)
    if block.shape[dim] != stop - start:
        raise RuntimeError(
            f"a sharded tensor of {n} rows holds {block.shape[dim]} here, not torch.chunk's "
            f"{stop - start}: this torch shards differently from what circuitviz expects"
        )
    return block, slice(start, stop)


def row_sums_of_squares(tensor: torch.Tensor, dim: int) -> torch.Tensor:
    """``[rows along dim]`` float64: each row's sum of squares in the whole tensor."""
    block, rows = local_rows(tensor, dim)
    squares = block.detach().double() ** 2
    squares = squares.reshape(1) if squares.ndim == 0 else squares.movedim(dim, 0)
    per_row = squares.flatten(1).sum(1) if squares.ndim > 1 else squares  # a block may be empty
    if not is_sharded(tensor):
        return per_row
    import torch.distributed as dist

    n = tensor.shape[dim]
    out = torch.zeros(n, dtype=torch.float64, device=per_row.device)
    out[rows] += per_row  # split along dim: our rows; split elsewhere: our part of every row
    dist.all_reduce(out, group=tensor.device_mesh.get_group())
    return out


def squared_norm(tensors: list[torch.Tensor]) -> torch.Tensor:
    """The squared 2-norm of all of ``tensors`` together (float64), summed across processes for
    the sharded ones."""
    total = torch.zeros((), dtype=torch.float64)
    sharded = torch.zeros((), dtype=torch.float64)
    for tensor in tensors:
        if is_sharded(tensor):
            sharded += tensor.to_local().double().pow(2).sum().cpu()
        else:
            total += tensor.double().pow(2).sum().cpu()
    groups = [t.device_mesh.get_group() for t in tensors if is_sharded(t)]
    if groups:
        import torch.distributed as dist

        device = tensors[0].device if dist.get_backend(groups[0]) == "nccl" else "cpu"
        sharded = sharded.to(device)
        dist.all_reduce(sharded, group=groups[0])
    return total + sharded.cpu()


def storage_key(tensor: torch.Tensor) -> tuple[int, int]:
    """(a key shared by tensors on one storage, the entries that storage holds): tied weights and
    the bridge's views of a fused tensor count once. A sharded parameter is its own storage."""
    if is_sharded(tensor):
        return id(tensor), tensor.numel()
    storage = tensor.untyped_storage()
    return storage.data_ptr(), storage.nbytes() // tensor.element_size()

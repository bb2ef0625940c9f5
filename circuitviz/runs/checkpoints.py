"""Checkpoint files of a run: model tensors as safetensors, resume state with ``torch.save``.

``checkpoints/step-000100.safetensors`` holds the tensors; ``checkpoints/step-000100.state.pt`` the
resume state (optimizer and scheduler state dicts, RNG states, data-order position). Each file is
written to a temporary name, flushed to disk and renamed into place, so a kill at any moment leaves
either the complete file or none; the writer records a checkpoint in the database only afterwards.

The resume state is read back with ``torch.load(weights_only=True)`` (no arbitrary pickles), so it
may hold only tensors, numbers, strings, bytes, None, and lists/tuples/dicts of these. numpy arrays
(``np.random.get_state()``) must be turned into tensors or lists first; ``save_resume_state`` checks
this when saving, so a bad state fails at the save, not at the resume.
"""

from __future__ import annotations

import os
from pathlib import Path

CHECKPOINT_DIR = "checkpoints"
_SCALARS = (str, int, float, bool, bytes, type(None))


def checkpoint_paths(run_dir: Path, step: int) -> tuple[Path, Path]:
    base = Path(run_dir) / CHECKPOINT_DIR / f"step-{step:06d}"
    return base.with_suffix(".safetensors"), base.with_suffix(".state.pt")


def save_tensors(path: Path, tensors: dict) -> None:
    import torch
    from safetensors.torch import save_file

    if not tensors:
        raise ValueError("tensors must be a non-empty dict of name -> torch.Tensor")
    seen: set[int] = set()
    plain: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        if not isinstance(tensor, torch.Tensor):
            raise ValueError(f"tensors[{name!r}] is a {type(tensor).__name__}, not a torch.Tensor")
        tensor = tensor.detach().to("cpu").contiguous()
        # safetensors refuses tensors sharing storage (GPT-2's q/k/v views of c_attn): copy those.
        ptr = tensor.untyped_storage().data_ptr()
        if ptr in seen:
            tensor = tensor.clone()
        seen.add(ptr)
        plain[name] = tensor
    _write_atomic(path, lambda tmp: save_file(plain, str(tmp)))


def save_resume_state(path: Path, state: dict) -> None:
    import torch

    if not isinstance(state, dict):
        raise ValueError(f"resume_state must be a dict, got {type(state).__name__}")
    _check_loadable(state, "resume_state")
    _write_atomic(path, lambda tmp: torch.save(state, tmp))


def load_tensors(path: Path, device: str = "cpu") -> dict:
    from safetensors.torch import load_file

    return load_file(str(path), device=device)


def load_resume_state(path: Path) -> dict:
    import torch

    return torch.load(path, map_location="cpu", weights_only=True)


def remove_partial_files(run_dir: Path) -> int:
    """Delete temporary files a killed writer left half-written; returns how many."""
    partial = list((Path(run_dir) / CHECKPOINT_DIR).glob(".*.tmp-*"))
    for path in partial:
        path.unlink(missing_ok=True)
    return len(partial)


def _check_loadable(value, where: str) -> None:
    import torch

    if isinstance(value, (*_SCALARS, torch.Tensor)):
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, _SCALARS):
                raise ValueError(f"{where} has a key of type {type(key).__name__}: {key!r:.60}")
            _check_loadable(item, f"{where}[{key!r}]")
        return
    if isinstance(value, list | tuple):
        for i, item in enumerate(value):
            _check_loadable(item, f"{where}[{i}]")
        return
    raise ValueError(
        f"{where} is a {type(value).__name__}, which torch.load(weights_only=True) refuses; "
        "store tensors, numbers, strings and lists/dicts of them (e.g. torch.from_numpy(array))"
    )


def _write_atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()

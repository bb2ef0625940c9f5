"""Train the bundled demo model: a small GPT-2 on the synthetic corpus, on CPU, reproducibly.

1. Build the word-level tokenizer and `steps * batch_size` corpus sentences from the seed (each
   sentence is used once; the loss covers every token of every sentence after the first).
2. Build a GPT2LMHeadModel (standard GPT-2 blocks: pre-LayerNorm, GELU, tied embeddings, no dropout)
   with weights drawn after `torch.manual_seed(seed)`.
3. AdamW with linear warm-up and cosine decay, on a fixed number of CPU threads, so the same seed
   on the same machine gives bit-identical weights.
4. Write a Hugging Face directory: config.json, model.safetensors, tokenizer files and
   training.json (the recipe and the loss curve).
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
from transformers import GPT2Config, GPT2LMHeadModel

from circuitviz.demo.corpus import build_corpus, corpus_fingerprint
from circuitviz.demo.tokenizer import build_demo_tokenizer

logger = logging.getLogger(__name__)

Progress = Callable[[int, int, float], None]  # (step done, total steps, loss)


@dataclass(frozen=True, kw_only=True)
class PretrainConfig:
    """The demo model's architecture and training recipe."""

    n_layers: int = 4
    n_heads: int = 8
    d_model: int = 128
    n_ctx: int = 64
    steps: int = 3000
    batch_size: int = 64
    lr: float = 2e-3
    warmup_steps: int = 100
    min_lr_ratio: float = 0.1
    weight_decay: float = 0.01
    seed: int = 0
    n_threads: int = 2

    def __post_init__(self) -> None:
        for name in ("n_layers", "n_heads", "d_model", "n_ctx", "steps", "batch_size", "n_threads"):
            if getattr(self, name) < 1:
                raise ValueError(f"PretrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        if self.d_model % self.n_heads:
            raise ValueError(
                f"PretrainConfig.d_model ({self.d_model}) must be divisible by n_heads ({self.n_heads})"
            )
        if not self.lr > 0:
            raise ValueError(f"PretrainConfig.lr must be > 0, got {self.lr}")
        if self.warmup_steps < 0:
            raise ValueError(f"PretrainConfig.warmup_steps must be >= 0, got {self.warmup_steps}")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(
                f"PretrainConfig.min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
            )
        if self.weight_decay < 0:
            raise ValueError(f"PretrainConfig.weight_decay must be >= 0, got {self.weight_decay}")


@dataclass(frozen=True, kw_only=True)
class PretrainResult:
    out_dir: Path
    final_loss: float
    seconds: float
    n_parameters: int
    size_bytes: int


def _lr_factor(step: int, config: PretrainConfig) -> float:
    if step < config.warmup_steps:
        return (step + 1) / config.warmup_steps
    progress = (step - config.warmup_steps) / max(1, config.steps - config.warmup_steps)
    cosine = 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))
    return config.min_lr_ratio + (1 - config.min_lr_ratio) * cosine


def build_demo_model(
    config: PretrainConfig, vocab_size: int, special_ids: dict[str, int]
) -> GPT2LMHeadModel:
    """A freshly initialised GPT-2 of the demo's shape (weights depend on torch's current seed)."""
    gpt2_config = GPT2Config(
        vocab_size=vocab_size,
        n_positions=config.n_ctx,
        n_embd=config.d_model,
        n_layer=config.n_layers,
        n_head=config.n_heads,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        bos_token_id=special_ids["eos"],
        eos_token_id=special_ids["eos"],
        pad_token_id=special_ids["pad"],
    )
    return GPT2LMHeadModel(gpt2_config)


def _encode_corpus(tokenizer, texts: list[str], n_ctx: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids [n, pos], right-padded, and the boolean mask of real tokens [n, pos]."""
    encoded = tokenizer(texts, padding=True, truncation=True, max_length=n_ctx, return_tensors="pt")
    return encoded["input_ids"], encoded["attention_mask"].bool()


def _train(
    model, ids, token_mask, config: PretrainConfig, progress: Progress | None
) -> list[float]:
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=config.lr, betas=(0.9, 0.95), weight_decay=config.weight_decay
    )
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _lr_factor(step, config))
    losses = []
    model.train()
    for step in range(config.steps):
        rows = slice(step * config.batch_size, (step + 1) * config.batch_size)
        width = int(token_mask[rows].sum(dim=1).max().item())
        batch_ids, mask = ids[rows, :width], token_mask[rows, :width]  # [batch, pos]
        logits = model(
            input_ids=batch_ids, attention_mask=mask.long()
        ).logits  # [batch, pos, d_vocab]
        # Every token after the first is a target; padding is not.
        loss = torch.nn.functional.cross_entropy(
            logits[:, :-1].flatten(0, 1), batch_ids[:, 1:].flatten(), reduction="none"
        )[mask[:, 1:].flatten()].mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        losses.append(float(loss.item()))
        if progress is not None:
            progress(step + 1, config.steps, losses[-1])
    model.eval()
    return losses


def _directory_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.iterdir() if f.is_file())


def pretrain_demo(
    out_dir: str | Path,
    *,
    seed: int = 0,
    steps: int | None = None,
    config: PretrainConfig | None = None,
    progress: Progress | None = None,
) -> PretrainResult:
    """Train the demo model and write it as a Hugging Face directory to `out_dir`.

    `seed` and `steps` override the config's; `progress(step, total, loss)` is called after every
    optimizer step (the CLI draws a progress bar with it).
    """
    config = replace(
        config or PretrainConfig(), seed=seed, steps=steps or (config or PretrainConfig()).steps
    )
    out_dir = Path(out_dir)
    start = time.perf_counter()
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(config.n_threads)
    try:
        tokenizer = build_demo_tokenizer(model_max_length=config.n_ctx)
        texts = build_corpus(config.steps * config.batch_size, seed=config.seed)
        ids, token_mask = _encode_corpus(tokenizer, texts, config.n_ctx)
        torch.manual_seed(config.seed)
        special = {"eos": tokenizer.eos_token_id, "pad": tokenizer.pad_token_id}
        model = build_demo_model(config, len(tokenizer), special)
        losses = _train(model, ids, token_mask, config, progress)
    finally:
        torch.set_num_threads(previous_threads)
    seconds = time.perf_counter() - start
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    tail = losses[-50:]
    final_loss = sum(tail) / len(tail)
    record = {
        "config": asdict(config),
        "corpus_sha256": corpus_fingerprint(texts),
        "final_loss": final_loss,
        "seconds": seconds,
        "torch": torch.__version__,
        "loss_curve": [
            round(sum(losses[i : i + 50]) / len(losses[i : i + 50]), 4)
            for i in range(0, len(losses), 50)
        ],
    }
    (out_dir / "training.json").write_text(json.dumps(record, indent=1) + "\n")
    n_parameters = sum(p.numel() for p in model.parameters())
    logger.info("demo model: %d parameters, loss %.3f, %.0f s", n_parameters, final_loss, seconds)
    return PretrainResult(
        out_dir=out_dir,
        final_loss=final_loss,
        seconds=seconds,
        n_parameters=n_parameters,
        size_bytes=_directory_size(out_dir),
    )

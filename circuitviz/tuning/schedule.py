"""Schedules over optimizer steps: the circuit size N, and which steps discover, evaluate or save.

The TopN schedule follows the paper's ``TopNScheduler`` (``--topn_scheduler START WARMUP kind``):
for t < WARMUP, linear interpolates from START to N and cosine gives
N + (START - N) / 2 * (1 + cos(pi * t / WARMUP)); from WARMUP on, N. Here t = step - 1, so the first
optimizer step (step 1) uses START.
"""

from __future__ import annotations

import math

from circuitviz.tuning.config import TuneConfig


def top_n_at(step: int, config: TuneConfig) -> int:
    """Circuit size (edges) used by optimizer step ``step`` (1-based)."""
    if config.topn_schedule is None or config.topn_start is None:
        return config.top_n
    t = step - 1
    if t >= config.topn_warmup:
        return config.top_n
    start, end, frac = config.topn_start, config.top_n, t / config.topn_warmup
    if config.topn_schedule == "linear":
        value = start + (end - start) * frac
    else:
        value = end + (start - end) / 2 * (1 + math.cos(math.pi * frac))
    return max(1, round(value))


def is_discovery_step(step: int, config: TuneConfig) -> bool:
    """Steps 1, 1 + K, 1 + 2K, ... discover a new circuit."""
    return config.discovers and (step - 1) % config.every == 0


def is_every(step: int, period: int, total: int) -> bool:
    """Whether a periodic action (eval, snapshot, checkpoint) falls on ``step``; period 0 = never
    (the final step is handled by the caller)."""
    return period > 0 and step % period == 0 and step != total

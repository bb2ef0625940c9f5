"""Circuit-tuning (Li et al. 2025, arXiv:2502.06106) and its baselines, recorded in the run store.

Public API:
    TuneConfig                                   every option of a run (frozen, validated)
    create_run(model, task, config, root, *, run_id=None, sweep_id=None) -> RunWriter
    run_tuning(model, task, config, writer, *, progress=None, data=None) -> TuneResult
        (continues from the writer's last checkpoint when it has one: ``tune --resume``)
    run_sweep(model, task, config, top_ns, root, ...) -> (sweep_id, rows)
    rescore_run(model, run, *, probe_size=None, resamples=8) -> steps
    StepProgress, TuneResult, NonFiniteLoss
    MaskedOptimizer, build_mask_bank (exact freezing of parameter slices)
"""

from circuitviz.tuning.config import TuneConfig
from circuitviz.tuning.loop import StepProgress, Tuner, TuneResult, run_tuning
from circuitviz.tuning.masks import NodeMaskBank, RowMask, build_mask_bank
from circuitviz.tuning.optim import MaskedOptimizer, NonFiniteLoss
from circuitviz.tuning.rescore import rescore_run
from circuitviz.tuning.storage import config_from_run, create_run
from circuitviz.tuning.sweep import run_sweep

__all__ = [
    "MaskedOptimizer",
    "NodeMaskBank",
    "NonFiniteLoss",
    "RowMask",
    "StepProgress",
    "TuneConfig",
    "TuneResult",
    "Tuner",
    "build_mask_bank",
    "config_from_run",
    "create_run",
    "rescore_run",
    "run_sweep",
    "run_tuning",
]

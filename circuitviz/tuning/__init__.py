"""Circuit-tuning (Li et al. 2025, arXiv:2502.06106) and its baselines, recorded in the run store.

Public API (names load on first use; ``config`` imports no torch):
    TuneConfig                                   every option of a run (frozen, validated)
    create_run(model, task, config, root, *, run_id=None, sweep_id=None) -> RunWriter
    run_tuning(model, task, config, writer, *, progress=None, data=None) -> TuneResult
        (continues from the writer's last checkpoint when it has one: ``tune --resume``)
    run_sweep(model, task, config, top_ns, root, ...) -> (sweep_id, rows)
    rescore_run(model, run, *, probe_size=None, resamples=8) -> steps
    StepProgress, TuneResult, NonFiniteLoss
    MaskedOptimizer, build_mask_bank (exact freezing of parameter slices)
"""

from circuitviz._lazy import exports, lazy_namespace

__getattr__, __dir__, __all__ = lazy_namespace(
    __name__,
    exports(
        ("config", ("TuneConfig",)),
        ("loop", ("StepProgress", "Tuner", "TuneResult", "run_tuning")),
        ("masks", ("NodeMaskBank", "RowMask", "build_mask_bank")),
        ("optim", ("MaskedOptimizer", "NonFiniteLoss")),
        ("rescore", ("rescore_run",)),
        ("storage", ("config_from_run", "create_run")),
        ("sweep", ("run_sweep",)),
    ),
)

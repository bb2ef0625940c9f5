"""Standard benchmarks through lm-evaluation-harness (``lm-eval``, the ``harness`` extra).

Public API (names load on first use)::

    HarnessConfig                  tasks, limit, few-shot, batch size, extra task directories
    resolve_tasks(config)          the task manager, with every name checked (no model needed)
    run_harness(model, config)     {task: {"metrics", "stderr", "n", ...}} for a loaded model
    BUNDLED_TASKS                  the directory of circuitviz's own tasks on local files
"""

from circuitviz._lazy import exports, lazy_namespace

__getattr__, __dir__, __all__ = lazy_namespace(
    __name__,
    exports(
        ("engine", ("BUNDLED_TASKS", "HarnessConfig", "HarnessError", "resolve_tasks")),
        ("engine", ("run_harness",)),
    ),
)

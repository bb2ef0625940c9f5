"""Why the circuit changed: analyses of a model's mechanisms, computed at a run's checkpoints.

One module per analysis, each with an oracle test: ``dla`` (direct logit attribution per node),
``over_time`` (those and the circuit's faithfulness at each checkpoint of a run, written into
its store) and ``alignment`` (two runs' circuits compared step by step).
"""

"""The tuning loop with low-rank adapters: ``--method lora`` and ``--method circuit-lora``.

``LoraTuner`` is the circuit-tuning loop (``loop.Tuner``) with four parts replaced; everything
else (data, discovery every K steps, evaluation, snapshots, head-change records, checkpoints,
resuming, the summary) is the loop's own, and sees the adapted model because the adapted
projections hold their merged weights outside training steps (``lora``, step 2):

1. the optimizer steps the adapters' factors (``AdapterSet.params``), not the model's weights;
2. a circuit becomes the trainable factors of its nodes' units (circuit-LoRA), or every factor
   (LoRA, whose "circuit" is the whole model, as for full fine-tuning); the tuned-parameter count
   is the trainable factor entries, its ratio taken against the base model's parameters;
3. each training step runs inside ``AdapterSet.training_pass`` (base weights in, adapter hooks on,
   merged again after the masked optimizer step);
4. a resumed run merges the restored factors into the freshly loaded base weights.
"""

from __future__ import annotations

import torch

from circuitviz.tuning.discovery import StepCircuit
from circuitviz.tuning.loop import Tuner
from circuitviz.tuning.lora import A_SUFFIX, AdapterSet


class LoraTuner(Tuner):
    """``Tuner`` training low-rank adapters (see the module docstring)."""

    shares_forward = False  # the training pass swaps the weights the forward must see

    def _trainable_params(self) -> dict[str, torch.nn.Parameter]:
        self.adapters = AdapterSet(
            self.model, self.bank, self.config, per_unit=self.config.method == "circuit-lora"
        )
        return dict(self.adapters.params)

    def _set_circuit(self, circuit: StepCircuit, *, whole: bool = False) -> None:
        self.circuit = circuit
        units = None if whole else self.bank.units(circuit.nodes)
        self.masks = self.adapters.masks(units)
        self.counts = self.adapters.count(self.masks)

    def _train(self, batch, ids, step: int, logits=None, spent=None) -> float:
        # ``shares_forward`` is off: the logits are always made here, inside the training pass.
        with self.adapters.training_pass(self.masks, seed=self.config.seed * 1_000_003 + step):
            return super()._train(batch, ids, step)

    def _restore(self) -> int | None:
        first = super()._restore()
        if first is not None:
            trained = {
                name.removesuffix(A_SUFFIX) for name in self.touched if name.endswith(A_SUFFIX)
            }
            self.adapters.merge([name for name in self.adapters.targets if name in trained])
        return first

    def _finish(self, seconds: float) -> dict:
        self.writer.set_summary(
            {
                "adapter_params": self.adapters.n_params,
                "adapter_targets": len(self.adapters.targets),
            }
        )
        return super()._finish(seconds)

"""The configuration of one circuit-tuning (or baseline) run.

Every option of the circuit-tuning loop (Li et al. 2025, arXiv:2502.06106, section 3 of
``shared/reference/circuit-tuning.md``) is a field here, declared once with its default, help text
and bounds (``circuitviz.options``); the ``tune`` and ``sweep`` flags are derived from these fields.
How edges are scored is a nested ``AttributionConfig``. A task may change some defaults
(``circuitviz.tasks.catalog``: ``tune_defaults``); a user's own value always wins. Field names are
recorded verbatim in each run's ``config``; this module imports no torch.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from typing import Literal

from circuitviz.attribution.config import AttributionConfig
from circuitviz.options import check_options, config_from_dict, normalise_choices, option

Method = Literal["circuit", "full", "random", "lora", "circuit-lora"]
Selection = Literal["top-n", "threshold", "node-weighted"]
TopNSchedule = Literal["linear", "cosine"]
Optimizer = Literal["sgd", "adamw"]
Loss = Literal["lm", "weighted"]
Shard = Literal["none", "fsdp"]
# The projections low-rank adapters may target (``--lora-targets``), in the family-neutral names
# ``circuitviz.tuning.lora`` maps to each architecture's tensors.
LORA_TARGETS = ("q", "k", "v", "o", "up", "gate", "down")

# What every run's attribution does unless told otherwise: one EAP pass per discovery step, scored
# at the position the metric reads (the paper's pre-verb position).
TUNE_ATTRIBUTION = AttributionConfig(method="eap", baseline="corrupted", positions="target")

# What changes when the model is a pretrained one rather than the bundled demo (trained here from
# scratch, 0.9M parameters) or a random shape: the demo's SGD at lr 1e-2 over 800 steps would wreck
# a pretrained model, and each step of a real model costs seconds on a CPU, so fewer, gentler steps
# with evaluations and snapshots that cost a small fraction of the run; circuits of a few hundred
# edges rarely hold a whole input -> logits path in a deep model, so N is larger.
PRETRAINED_DEFAULTS: dict = {
    "optimizer": "adamw",
    "lr": 1e-4,
    "weight_decay": 0.0,
    "steps": 300,
    "batch_size": 8,
    "top_n": 2000,
    "n_dev": 64,
    "n_probe": 8,
    "n_heldout": 64,
    "eval_every": 50,
    "snapshot_every": 50,
    "checkpoint_every": 100,
}

# Spellings of earlier versions, still read from stored runs and accepted on the command line.
_SELECTION_ALIASES = {"top_n": "top-n", "node_weighted": "node-weighted"}
# Attribution fields that earlier versions stored flat in TuneConfig (``attribution`` was the method).
_LEGACY_ATTRIBUTION_KEYS = ("baseline", "positions", "ig_steps", "metric")


@dataclass(frozen=True, kw_only=True)
class TuneConfig:
    """Options of one tuning run (see the module docstring and each field's help)."""

    method: Method = option(
        "circuit",
        help="circuit: discover, select, update only the circuit's parameter slices; full: plain "
        "fine-tuning of every parameter; random: a random subgraph of N edges redrawn every K "
        "steps (the control); lora: low-rank adapters on the attention and MLP projections "
        "(--lora-*); circuit-lora: the same adapters, each update restricted to the circuit "
        "re-discovered every K steps",
    )
    selection: Selection = option(
        "top-n",
        aliases=_SELECTION_ALIASES,
        help="top-n: the N edges with the largest |score|; threshold: every edge with |score| >= "
        "--threshold; node-weighted: the paper's ranking of |score| times the strength of both "
        "endpoints, top N",
    )
    top_n: int = option(200, low=1, metavar="N", help="edges per circuit")
    threshold: float | None = option(None, help="for --selection threshold: keep |score| >= T")
    every: int = option(1, low=1, metavar="K", help="discover a new circuit every K steps")
    topn_schedule: TopNSchedule | None = option(
        None, help="move N from --topn-start to --top-n over --topn-warmup steps"
    )
    topn_start: int | None = option(None, low=1, help="N at step 1 when scheduling N")
    topn_warmup: int = option(0, low=0, metavar="STEPS", help="steps over which N moves")
    attribution: AttributionConfig = option(
        default_factory=lambda: TUNE_ATTRIBUTION, help="how edges are scored"
    )
    paper_graph: bool = option(False, help="the paper's graph: no input and logits nodes")
    mlp_groups: int | None = option(
        None,
        low=1,
        metavar="G",
        help="split every MLP into G groups of neurons, each its own node (m{L}.g{j}) owning its "
        "rows of the up/gate and columns of the down projection: circuits tune at neuron-group "
        "granularity (the paper's Llama graph)",
    )
    layer0_qkv: bool = option(False, help="always train layer 0's q/k/v slices too")
    random_ratio: float = option(
        0.0,
        low=0.0,
        high=1.0,
        help="also keep this fraction of the nodes outside the step-1 circuit trainable all run "
        "(the paper's random activation)",
    )
    random_seed: int = option(0, help="seed of the random activation")
    optimizer: Optimizer = option("sgd", help="the optimizer")
    lr: float = option(1e-2, low=0.0, open_low=True, help="learning rate")
    momentum: float = option(0.9, low=0.0, high=1.0, open_high=True, help="SGD momentum")
    weight_decay: float = option(
        1e-4, low=0.0, help="weight decay (exact: never on frozen entries)"
    )
    warmup_steps: int = option(0, low=0, help="linear learning-rate warm-up")
    batch_size: int = option(16, low=1, help="examples per optimizer step")
    steps: int | None = option(800, low=1, help="optimizer steps (or give --epochs)")
    epochs: int | None = option(None, low=1, help="passes over the training examples")
    grad_clip: float | None = option(
        None, low=0.0, open_low=True, help="clip the gradient norm to this"
    )
    loss: Loss = option(
        "lm",
        help="lm: mean next-token loss over the training text; weighted: the answer token counts "
        "--target-weight times",
    )
    target_weight: float = option(1.0, low=0.0, open_low=True, help="for --loss weighted")
    answer_swap: float = option(
        0.0,
        low=0.0,
        high=1.0,
        help="fraction of training sentences given the other answer (0.5 = balanced data)",
    )
    debias_beta: float = option(
        0.0, low=0.0, help="add beta * |mean logit(answer) - logit(wrong)| (the paper's de-biasing)"
    )
    circuit_forward: bool = option(
        False, help="mean-ablate every edge outside the circuit in training forwards"
    )
    grad_checkpointing: bool = option(
        False,
        help="training steps keep only each block's input and recompute its activations in the "
        "backward: less memory for about one more forward of time (not with LoRA methods or "
        "--circuit-forward)",
    )
    shard: Shard = option(
        "none",
        help="fsdp: split every parameter, gradient and optimizer state across the processes "
        "(torch FSDP, one unit per transformer block), for training state that does not fit one "
        "device (the weights must, once: each process loads them whole); needs several "
        "processes (--nproc N or torchrun) and a model without fused weight views (Llama family)",
    )
    chat_template: bool = option(
        True,
        help="instruction tasks: put prompts through the tokenizer's chat template when it has one",
    )
    max_length: int = option(
        512,
        low=2,
        help="instruction tasks: most tokens of prompt + response; longer examples are truncated "
        "and counted",
    )
    prompt_field: str | None = option(
        None, metavar="COLUMN", help="hf: datasets: the prompt column (none: found by its name)"
    )
    response_field: str | None = option(
        None, metavar="COLUMN", help="hf: datasets: the response column (none: found by its name)"
    )
    answer_field: str | None = option(
        None,
        metavar="COLUMN",
        help="hf: datasets: the final-answer column, for exact match (none: found by its name)",
    )
    eval_task: str | None = option(
        None,
        flag="--eval",
        metavar="TASK",
        help="score dev figures on this task spec instead of the training task's dev split (e.g. "
        "sft:dev.jsonl, every example of which is used up to --n-dev)",
    )
    max_new_tokens: int = option(
        128, low=1, help="instruction tasks: bound on each generated answer for exact match"
    )
    exact_match_every: int = option(
        0,
        low=0,
        metavar="STEPS",
        help="instruction tasks: generate and score exact match every STEPS steps (0: only before "
        "and after, since generation costs far more than the response loss measured every E)",
    )
    lora_rank: int = option(
        32,
        low=1,
        metavar="R",
        help="lora, circuit-lora: rank of each projection's low-rank update (circuit-lora gives "
        "each of a projection's U heads, key/value groups or neuron groups its own factors of "
        "rank ceil(R/U))",
    )
    lora_alpha: float = option(
        64.0, low=0.0, open_low=True, help="lora, circuit-lora: updates are scaled by alpha / R"
    )
    lora_dropout: float = option(
        0.05,
        low=0.0,
        high=1.0,
        open_high=True,
        help="lora, circuit-lora: dropout on the adapters' input in training steps",
    )
    lora_targets: str = option(
        ",".join(LORA_TARGETS),
        metavar="NAMES",
        help="lora, circuit-lora: the projections given adapters, comma-separated: q, k, v, o "
        "(attention), up, gate, down (MLP; GPT-2's c_fc is up and its c_proj down)",
    )
    eval_every: int = option(
        50, low=0, metavar="E", help="evaluate every E steps (0: only at the end)"
    )
    snapshot_every: int = option(
        50, low=0, metavar="S", help="store the circuit every S steps (0: only at the end)"
    )
    checkpoint_every: int = option(
        100, low=0, metavar="C", help="save a checkpoint every C steps (0: only at the end)"
    )
    n_train: int = option(2048, low=1, help="training examples drawn")
    n_dev: int = option(256, low=1, help="dev examples for accuracy and the task metric")
    n_probe: int = option(32, low=1, help="fixed dev examples every circuit snapshot scores")
    n_heldout: int = option(256, low=1, help="held-out texts for the general LM loss")
    seed: int = option(0, help="data order, example draws and random circuits")

    def __post_init__(self) -> None:
        normalise_choices(self)
        check_options(self)
        if self.topn_schedule is not None and (self.topn_start is None or self.topn_warmup < 1):
            raise ValueError(
                f"TuneConfig.topn_schedule={self.topn_schedule!r} needs topn_start and "
                f"topn_warmup >= 1, got topn_start={self.topn_start}, topn_warmup={self.topn_warmup}"
            )
        if self.selection == "threshold" and self.threshold is None:
            raise ValueError("TuneConfig.threshold must be set when selection='threshold'")
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(
                f"TuneConfig: give exactly one of steps and epochs, got steps={self.steps}, "
                f"epochs={self.epochs}"
            )
        if self.grad_checkpointing and (self.adapters or self.circuit_forward):
            given = f"--method {self.method}" if self.adapters else "--circuit-forward"
            raise ValueError(
                f"--grad-checkpointing (grad_checkpointing) recomputes plain blocks, so not with "
                f"{given}: LoRA methods hook the projections in training, and --circuit-forward "
                "(circuit_forward) ablates edges with hooks; drop one of the two"
            )
        if self.shard == "fsdp" and self.adapters:
            raise ValueError(
                f"--shard fsdp trains the model's own weights, not LoRA adapters (--method "
                f"{self.method}): use --method circuit or full, or leave --shard out"
            )
        if self.circuit_forward and self.method not in ("circuit", "random"):
            raise ValueError(
                "TuneConfig.circuit_forward needs a circuit of the model's own weights: method "
                f"'circuit' or 'random', got {self.method!r}"
            )
        self.lora_target_names()  # raises for an unknown or repeated name

    def sft_format(self):
        """How an instruction task's examples become tokens (``circuitviz.tasks.SFTFormat``)."""
        from circuitviz.tasks.sft import SFTFormat

        return SFTFormat(chat_template=self.chat_template, max_length=self.max_length)

    def sft_fields(self):
        """Which columns of an ``hf:`` dataset hold prompt, response and answer."""
        from circuitviz.tasks.sft_sources import SFTFields

        return SFTFields(
            prompt=self.prompt_field, response=self.response_field, answer=self.answer_field
        )

    @property
    def discovers(self) -> bool:
        """Whether the run picks a subgraph (circuit, random, circuit-lora) rather than training
        everything."""
        return self.method in ("circuit", "random", "circuit-lora")

    @property
    def adapters(self) -> bool:
        """Whether the run trains low-rank adapters (lora, circuit-lora) instead of the weights."""
        return self.method in ("lora", "circuit-lora")

    def lora_target_names(self) -> tuple[str, ...]:
        """``lora_targets`` as a tuple of names from ``LORA_TARGETS``."""
        names = tuple(part.strip() for part in self.lora_targets.split(","))
        unknown = [name for name in names if name not in LORA_TARGETS]
        if unknown or not names or len(set(names)) != len(names):
            raise ValueError(
                f"TuneConfig.lora_targets must be distinct names among {', '.join(LORA_TARGETS)}, "
                f"comma-separated; got {self.lora_targets!r}"
            )
        return names

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def defaults_for(cls, task: str, model_spec: str, *, runs_dir=None) -> list[dict]:
        """The layers of defaults between the fields' own and a user's values, in order: the
        pretrained-model defaults (unless ``model_spec`` is the demo or a random shape), the task
        kind's (instruction tasks score with their own loss, mean-ablated) and the task's own
        (``circuitviz.tasks.catalog``). Nested dicts (``attribution``) merge key by key."""
        from circuitviz.models.spec import is_pretrained_spec
        from circuitviz.tasks.catalog import CATALOG, KIND_TUNE_DEFAULTS, task_kind

        layers = [PRETRAINED_DEFAULTS] if is_pretrained_spec(model_spec, runs_dir) else []
        # An unknown task is reported, with the choices, when its data loads.
        with contextlib.suppress(ValueError):
            layers.append(KIND_TUNE_DEFAULTS[task_kind(task)])
        if task in CATALOG:
            layers.append(dict(CATALOG[task].tune_defaults))
        return layers

    @classmethod
    def from_dict(cls, values: dict) -> TuneConfig:
        """Rebuild from ``to_dict`` output (a stored run's config); unknown keys are an error. Runs
        stored before the attribution options were nested keep them flat, with ``attribution``
        naming the method; both forms load."""
        values = dict(values)
        if not isinstance(values.get("attribution", {}), dict):
            legacy = {"method": values.pop("attribution")}
            legacy |= {key: values.pop(key) for key in _LEGACY_ATTRIBUTION_KEYS if key in values}
            values["attribution"] = {**asdict(TUNE_ATTRIBUTION), **legacy}
        return config_from_dict(cls, values)

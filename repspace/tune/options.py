"""Options of a training run (the method's own are in :mod:`repspace.tune.methods.options`)."""

from __future__ import annotations

from dataclasses import dataclass

from repspace.utils.options import Options, option

#: How the trainer spreads a model over the processes of a ``torchrun`` launch.
SHARDING = ("ddp", "fsdp")
#: How the trainer batches a shuffled epoch (:func:`repspace.tune.data.step_batches`).
BATCHING = ("length", "random")


@dataclass
class TrainOptions(Options):
    """Training: budget, optimiser, batches and device.

    The keywords of :func:`repspace.tune.tune`, and the flags of ``repspace tune``.
    """

    task: str = option("classification", "classification (JSONL text,label) or generation "
                       "(JSONL prompt,answer)", choices=("classification", "generation"))
    epochs: int = option(3, "epochs", minimum=1)
    lr: float | None = option(None, "learning rate (default: the method's)")
    head_lr: float = option(1e-3, "classification head learning rate")
    batch_size: int = option(16, "global batch per micro-step", minimum=1)
    grad_accum: int = option(1, "micro-steps per optimizer step", minimum=1)
    seed: int = option(0, "random seed")
    device: str = option("auto", "auto (CUDA with bf16 if present), cpu, cuda")
    max_length: int = option(128, "truncate inputs to N tokens", minimum=1)
    warmup_ratio: float = option(0.06, "share of the steps with linear warm-up")
    weight_decay: float = option(0.0, "AdamW weight decay")
    max_grad_norm: float = option(1.0, "gradient clipping norm")
    dropout: float | None = option(None, "set every dropout probability (default: the model's "
                                   "own)")
    eval_every: int = option(0, "also evaluate every N optimizer steps (always after each "
                             "epoch)", minimum=0)
    snapshots: bool = option(False, "write a checkpoint OUT-stem.stepN.pt at every evaluation "
                             "(the points of a training trajectory)")
    batching: str = option("length", "length (each step's batches hold examples of similar "
                           "lengths, drawn from a seeded shuffle: less padding) or random",
                           choices=BATCHING)
    sharding: str = option("ddp", "under torchrun: ddp (a whole model per process) or fsdp "
                           "(parameters, gradients and optimizer states sharded across the "
                           "processes; full and selective methods)", choices=SHARDING)
    save_every: int = option(0, "also save resumable state every N steps (always after each "
                             "epoch)", minimum=0)

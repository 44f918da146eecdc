"""Learning-rate sweep behind a study's arms: every single-stage arm at a grid of rates, with the
study's budget, scored on held-out examples that the study itself never evaluates on (the eval
rows after the study's ``eval_limit``). Prints one row per method with the score at each rate,
the best rate and McNemar's exact test of the best rate against the current one (the same
held-out examples: p small means the gain is more than a few answers); the chosen rates are
written into ``repspace/demo/settings.py`` by hand, with this script's output in docs/study.md.

    .venv/bin/python scripts/sweep_study.py --study encoder
    .venv/bin/python scripts/sweep_study.py --study decoder --factors 0.5,1,2
    .venv/bin/python scripts/sweep_study.py --study decoder --arms adapter,prefix --held-out 96
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from repspace.demo.claims import mcnemar
from repspace.demo.settings import StudySettings
from repspace.models import export_checkpoint, load_model
from repspace.results.tables import fixed_width
from repspace.tune import tune
from repspace.tune.data import read_jsonl
from repspace.utils.quiet import quiet_libraries


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--study", default="encoder", choices=("encoder", "decoder"))
    parser.add_argument("--factors", default="0.5,1,2,4",
                        help="multiples of each arm's current rate (default 0.5,1,2,4)")
    parser.add_argument("--held-out", type=int, default=300, help="held-out examples scored")
    parser.add_argument("--arms", default=None,
                        help="comma-separated single-stage arms to sweep (default: all of them)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    quiet_libraries()
    settings = StudySettings.preset_of(args.study)
    factors = [float(f) for f in args.factors.split(",")]
    single = [arm for arm in settings.arms if arm.method != "pt-peft"]
    wanted = args.arms.split(",") if args.arms else [arm.label for arm in single]
    unknown = sorted(set(wanted) - {arm.label for arm in single})
    if unknown:
        parser.error(f"unknown arm(s) {', '.join(unknown)}; choose from "
                     f"{', '.join(arm.label for arm in single)}")
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        export_checkpoint(settings.base, work / "base.pt")
        base = load_model(work / "base.pt")
        train = read_jsonl(settings.train, settings.task)[:settings.train_limit]
        start = settings.eval_limit or 0
        held = read_jsonl(settings.eval, settings.task)[start:start + args.held_out]
        for name, rows in (("train", train), ("held", held)):
            (work / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        table = []
        # PT-PEFT is not swept: its stages use the rates of prefix and of its second method
        for arm in (arm for arm in single if arm.label in wanted):
            scores, hits = [], []
            for factor in factors:
                tic = time.perf_counter()
                run = tune(base, arm.method, task=settings.task, data=work / "train.jsonl",
                           eval_data=work / "held.jsonl", out=work / f"{arm.label}.pt",
                           epochs=settings.epochs, lr=arm.lr * factor,
                           batch_size=settings.batch_size, max_length=settings.max_length,
                           device=args.device, progress=False, peft_folder=False,
                           **arm.options)
                scores.append(run.final_metric)
                hits.append(run.history[-1]["eval_hits"])
                print(f"{arm.label} lr {arm.lr * factor:.2g}: {run.final_metric:.3f} "
                      f"({time.perf_counter() - tic:.0f} s)", flush=True)
            best = max(range(len(factors)), key=scores.__getitem__)
            test = "-"
            if 1.0 in factors and factors[best] != 1.0:
                gained, lost, p = mcnemar(hits[factors.index(1.0)], hits[best])
                test = f"+{gained}/-{lost}, p = {p:.3f}"
            table.append([arm.label, *(f"{s:.3f}" for s in scores),
                          f"{arm.lr * factors[best]:.2g}", test])
    print(f"\n{args.study}: {len(train)} training examples, {settings.epochs} epoch(s), batch "
          f"{settings.batch_size}; scored on {len(held)} held-out examples; load average "
          f"{os.getloadavg()[0]:.1f}")
    print(fixed_width(["arm", *(f"x{f:g}" for f in factors), "best rate", "best vs x1"],
                      table))


if __name__ == "__main__":
    main()

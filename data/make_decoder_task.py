"""Generate the decoder version of the incident root-cause task (a short-answer generation task).

Each prompt is an incident report: a title line naming the service and the severity (both
independent of the label), the incident note of ``data/make_task.py`` and a fixed question. The
answer is the label of the root-cause component, one word out of ``database``, ``cache``,
``network``, ``queue``, ``storage``, scored by exact match. The notes are the ones
``make_task.generate()`` builds (imported, not copied), so the label rule and the held-out scheme
are those of ``data/TASK.md``: every eval cause uses a (name, symptom) pairing that train never
used as a cause, and half of the eval notes use templates train never saw.

Run from the repository root (standard library only, deterministic)::

    python data/make_decoder_task.py   # writes data/decoder_task_{train,eval}.jsonl

See ``data/DECODER_TASK.md`` for the format, the scoring rule and the measured baselines.
"""

from __future__ import annotations

import argparse
import json
import random
import re
from collections import Counter
from pathlib import Path

from make_task import LABELS, TEMPLATES
from make_task import generate as generate_notes

SEED = 20261202
N_TRAIN_PER_CLASS = 400
N_EVAL_PER_CLASS = 60  # half with held-out templates, half with train templates
DATA_DIR = Path(__file__).resolve().parent

QUESTION = (
    "Question: Which component was the root cause: database, cache, network, queue or storage?"
)
SERVICES = (
    "checkout-api",
    "payments",
    "search",
    "user-profile",
    "notifications",
    "inventory",
    "billing",
    "auth-service",
    "order-history",
    "recommendations",
    "media-upload",
    "reporting",
)
SEVERITIES = ("SEV1", "SEV2", "SEV3")
HELD_OUT_TEMPLATES = frozenset(t for t, held in TEMPLATES if held)
_SPACE_RE = re.compile(r"\s+")


def build_prompt(rng: random.Random, note: str) -> str:
    """The full prompt for one note; it ends with ``Answer:`` (the answer follows after a space)."""
    title = f"Incident report ({rng.choice(SERVICES)}, {rng.choice(SEVERITIES)})"
    return f"{title}\n{note}\n{QUESTION}\nAnswer:"


def normalize_answer(text: str) -> str:
    """A generation reduced for exact match: first line, lowercase, outer punctuation stripped."""
    line = text.strip().split("\n", 1)[0] if text.strip() else ""
    return _SPACE_RE.sub(" ", line).strip().strip(".,;:!?\"'").strip().lower()


def exact_match(generation: str, answer: str) -> bool:
    """True when the normalised generation equals the answer (see ``DECODER_TASK.md``)."""
    return normalize_answer(generation) == answer


def _select(rows: list[dict[str, str]], per_class: int, by_template: bool) -> list[dict[str, str]]:
    """The first ``per_class`` rows of every label (half of them from held-out templates)."""
    counts: Counter[tuple[str, bool]] = Counter()
    quota = per_class // 2 if by_template else per_class
    out = []
    for r in rows:
        group = (r["label"], by_template and r["template"] in HELD_OUT_TEMPLATES)
        if counts[group] < quota:
            counts[group] += 1
            out.append(r)
    return out


def generate(seed: int = SEED) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    """Train (``N_TRAIN_PER_CLASS`` per label) and eval (``N_EVAL_PER_CLASS``) rows."""
    notes_train, notes_eval = generate_notes()
    rng = random.Random(seed)
    splits = []
    for name, rows, per_class, by_template in (
        ("train", notes_train, N_TRAIN_PER_CLASS, False),
        ("eval", notes_eval, N_EVAL_PER_CLASS, True),
    ):
        chosen = _select(rows, per_class, by_template)
        rng.shuffle(chosen)
        splits.append(
            [
                {
                    "id": f"dec-{name}-{i + 1:05d}",
                    "prompt": build_prompt(rng, r["text"]),
                    "answer": r["label"],
                }
                for i, r in enumerate(chosen)
            ]
        )
    return splits[0], splits[1]


def main() -> None:
    """Command-line entry point: write both splits."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out-dir", type=Path, default=DATA_DIR)
    args = parser.parse_args()
    train, evaluation = generate()
    for name, rows in (("train", train), ("eval", evaluation)):
        path = args.out_dir / f"decoder_task_{name}.jsonl"
        with path.open("w", encoding="utf-8") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
        dist = dict(sorted(Counter(r["answer"] for r in rows).items()))
        words = [len(r["prompt"].split()) for r in rows]
        print(f"{path.name}: {len(rows)} rows {dist}, prompt words {min(words)}-{max(words)}")
    if {r["answer"] for r in train} != set(LABELS):
        raise SystemExit("a label is missing from train")


if __name__ == "__main__":
    main()

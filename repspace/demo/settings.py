"""What the demo study runs: methods, budget, seeds and data sizes (defaults and ``--quick``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from repspace.errors import InputError
from repspace.probes import DATA_DIR, data_reference

BASE_MODEL = "sentence-transformers/all-MiniLM-L6-v2"
TASK_TRAIN = DATA_DIR / "task_train.jsonl"
TASK_EVAL = DATA_DIR / "task_eval.jsonl"
PARAPHRASES = DATA_DIR / "paraphrases.jsonl"


@dataclass(frozen=True)
class Arm:
    """One compared method: its label in the report, the trainer method, its learning rate and
    options."""

    label: str
    method: str
    lr: float
    options: dict = field(default_factory=dict)


#: The methods of the study, in report order. Learning rates are set for the short budget of
#: the demo (tens of steps): about 4x the trainer's defaults, which suit longer runs.
ARMS = (
    Arm("linear-probe", "linear-probe", 1e-2),
    Arm("full", "full", 1e-4),
    Arm("lora", "lora", 2e-3),
    Arm("adapter", "adapter", 2e-3),
    Arm("prefix", "prefix", 2e-2),
    Arm("pt-peft-lora", "pt-peft", 2e-3, {"second": "lora", "stage1_lr": 2e-2}),
    Arm("pt-peft-adapter", "pt-peft", 2e-3, {"second": "adapter", "stage1_lr": 2e-2}),
)


@dataclass(frozen=True)
class DemoSettings:
    """The study's knobs. Every method gets the same number of optimizer steps (``epochs``
    passes over ``train_limit`` examples); PT-PEFT splits them evenly between its stages."""

    seeds: int = 3
    epochs: int = 2
    batch_size: int = 32
    max_length: int = 64
    train_limit: int | None = 800
    eval_limit: int | None = 300
    probe_limit: int = 500
    paraphrase_limit: int | None = None
    bootstrap: int = 200
    umap_points: int = 300
    base: str = BASE_MODEL
    train: str = str(TASK_TRAIN)
    eval: str = str(TASK_EVAL)
    paraphrases: str = str(PARAPHRASES)

    @classmethod
    def quick(cls) -> DemoSettings:
        """A few minutes on a laptop CPU: fewer samples, one seed, short training."""
        return cls(seeds=1, epochs=1, train_limit=256, eval_limit=200, probe_limit=200,
                   paraphrase_limit=150, bootstrap=100, umap_points=150)

    def with_seeds(self, seeds: int | None) -> DemoSettings:
        """These settings with ``seeds`` seeds per method (``None``: unchanged; at least 1)."""
        if seeds is not None and seeds < 1:
            raise InputError(f"the demo needs at least 1 seed per method, got {seeds}")
        return self if seeds is None else replace(self, seeds=seeds)

    def to_dict(self) -> dict:
        """The settings as JSON-plain values; data files by :func:`~repspace.probes.data_reference`
        (shipped files as ``data/NAME``, with their SHA-256), never as absolute paths."""
        data = asdict(self)
        for key in ("train", "eval", "paraphrases"):
            data[key] = data_reference(data[key])
        return data

    def key(self, *parts: object) -> str:
        """A short hash of these settings (and ``parts``): the cache key of derived files."""
        text = json.dumps([self.to_dict(), *map(str, parts)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def data_files(self) -> list[Path]:
        return [Path(self.train), Path(self.eval), Path(self.paraphrases)]

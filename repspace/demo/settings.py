"""What a study runs: its model, data, arms (methods with their learning rates), budget and
seeds, as presets (``repspace demo --study encoder|decoder [--quick | --gpu]``)."""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

from repspace.errors import InputError
from repspace.probes import DATA_DIR, data_reference

STUDIES = ("encoder", "decoder")
PRESETS = ("default", "quick", "gpu")


@dataclass(frozen=True)
class Arm:
    """One compared method: its label in the report, the trainer method, its learning rate and
    options (for ``pt-peft``: ``second`` and ``stage1_lr``; stage 1 gets half the steps)."""

    label: str
    method: str
    lr: float
    options: dict = field(default_factory=dict)


def _arms(rates: dict[str, float], stage1_lr: float,
          prefix: dict | None = None) -> tuple[Arm, ...]:
    """The study's arms in report order, from one learning rate per method; ``prefix``: the
    prefix options of the prefix and PT-PEFT arms."""
    prefix = prefix or {}
    arms = [Arm(label, label, rates[label], prefix if label == "prefix" else {}) for label in
            ("linear-probe", "full", "lora", "adapter", "prefix") if label in rates]
    arms += [Arm(f"pt-peft-{second}", "pt-peft", rates[second],
                 {"second": second, "stage1_lr": stage1_lr, **prefix})
             for second in ("lora", "adapter")]
    return tuple(arms)


#: Encoder arms. Rates for the short CPU budget (a few tens of steps: 4-16x the trainer's
#: defaults, which suit longer runs), from ``scripts/sweep_study.py`` on held-out examples the
#: study never scores: a rate changed only where the better one wins McNemar's test at
#: p < 0.05 (full, LoRA; docs/study.md).
ENCODER_ARMS = _arms({"linear-probe": 1e-2, "full": 2e-4, "lora": 8e-3, "adapter": 4e-3,
                      "prefix": 4e-2}, stage1_lr=4e-2)
#: Decoder arms (SmolLM2-135M): no linear probe (the task is generation through the LM head).
#: The prefix starts from the model's own keys/values of real tokens (``prefix_init=
#: "activations"``): PEFT's random N(0, 1) start alone moves SmolLM2's last-layer task features
#: to CKA 0.42 and its general-text LM loss from 3.67 to 7.35 before any training; the
#: activations start keeps CKA 0.82 and LM loss 3.68 (docs/study.md).
DECODER_ARMS = _arms({"full": 5e-5, "lora": 2e-3, "adapter": 2e-3, "prefix": 2e-2},
                     stage1_lr=2e-2, prefix={"prefix_init": "activations"})


@dataclass(frozen=True)
class StudySettings:
    """The knobs of a study. Every arm gets the same number of optimizer steps (``epochs``
    passes over ``train_limit`` examples at ``batch_size``; PT-PEFT splits them evenly between
    its stages) and is evaluated ``evaluations`` times per epoch: the points of its trajectory.

    Probe sets: ``task`` (the eval inputs, the paper's setting) and ``general`` (passages of
    general text, at least ``rank_tokens`` tokens long so that the rank ratio resolves).
    Forgetting: paraphrase retrieval (encoder); general-knowledge questions and language-model
    loss on general text (decoder). ``skip_first``: features leave each sample's first token
    out (the decoder's attention sink, see :func:`repspace.capture.capture`); ``last_token``:
    CKA and its claim checks also on the last token's hidden state (what a decoder generates
    from), beside the mean over tokens.
    """

    study: str = "encoder"
    preset: str = "default"
    base: str = "sentence-transformers/all-MiniLM-L6-v2"
    task: str = "classification"
    arms: tuple[Arm, ...] = ENCODER_ARMS
    seeds: int = 2
    epochs: int = 2
    batch_size: int = 32
    max_length: int = 64
    train_limit: int | None = 1200
    eval_limit: int | None = 300
    evaluations: int = 3
    general_limit: int = 300
    general_length: int = 128
    rank_tokens: int = 32
    skip_first: bool = False
    last_token: bool = False
    layer_stride: int = 1
    paraphrase_limit: int | None = None
    knowledge_limit: int | None = None
    bootstrap: int = 200
    device: str = "auto"
    train: str = str(DATA_DIR / "task_train.jsonl")
    eval: str = str(DATA_DIR / "task_eval.jsonl")
    general: str = str(DATA_DIR / "general_text.txt")
    paraphrases: str | None = str(DATA_DIR / "paraphrases.jsonl")
    knowledge: str | None = None

    @classmethod
    def preset_of(cls, study: str = "encoder", preset: str = "default") -> StudySettings:
        """The settings of ``study`` (``encoder`` or ``decoder``) under ``preset``: ``default``
        (the CPU study), ``quick`` (a smoke run of the pipeline) or ``gpu`` (more seeds and
        steps, bf16 on one GPU)."""
        if study not in STUDIES:
            raise InputError(f"unknown study {study!r}; choose from {', '.join(STUDIES)}")
        if preset not in PRESETS:
            raise InputError(f"unknown preset {preset!r}; choose from {', '.join(PRESETS)}")
        settings = cls() if study == "encoder" else cls(
            study="decoder", base="smollm2-135m-instruct", task="generation", arms=DECODER_ARMS,
            seeds=1, epochs=1, batch_size=8, max_length=96, train_limit=640, eval_limit=48,
            evaluations=3, general_limit=48, general_length=96, layer_stride=3, skip_first=True,
            last_token=True, paraphrase_limit=None, knowledge_limit=64, bootstrap=200,
            train=str(DATA_DIR / "decoder_task_train.jsonl"),
            eval=str(DATA_DIR / "decoder_task_eval.jsonl"), paraphrases=None,
            knowledge=str(DATA_DIR / "general_knowledge.jsonl"))
        if preset == "quick":
            small = {"encoder": dict(seeds=1, epochs=1, train_limit=128, eval_limit=100,
                                     general_limit=64, paraphrase_limit=64, bootstrap=30,
                                     evaluations=2),
                     "decoder": dict(epochs=1, train_limit=48, eval_limit=24, general_limit=24,
                                     knowledge_limit=24, evaluations=2, bootstrap=50,
                                     arms=tuple(a for a in DECODER_ARMS
                                                if a.label in ("lora", "prefix", "pt-peft-lora")))}
            settings = replace(settings, **small[study])
        elif preset == "gpu":
            large = {"encoder": dict(seeds=5, epochs=6, train_limit=None, eval_limit=None,
                                     general_limit=454, evaluations=4, bootstrap=1000,
                                     device="cuda"),
                     "decoder": dict(seeds=3, epochs=2, batch_size=16, train_limit=2000,
                                     eval_limit=300, general_limit=300, knowledge_limit=None,
                                     layer_stride=1, evaluations=4, bootstrap=1000,
                                     device="cuda")}
            settings = replace(settings, **large[study])
        return replace(settings, preset=preset)

    def with_seeds(self, seeds: int | None) -> StudySettings:
        """These settings with ``seeds`` seeds per method (``None``: unchanged; at least 1)."""
        if seeds is not None and seeds < 1:
            raise InputError(f"a study needs at least 1 seed per method, got {seeds}")
        return self if seeds is None else replace(self, seeds=seeds)

    def to_dict(self) -> dict:
        """The settings as JSON-plain values; data files by :func:`~repspace.probes.data_reference`
        (shipped files as ``data/NAME``, with their SHA-256), never as absolute paths."""
        data = asdict(self)
        for key in self._files():
            data[key] = data_reference(data[key]) if data[key] else None
        return data

    def key(self, *parts: object) -> str:
        """A short hash of what training depends on (and ``parts``): the cache key of derived
        files, the same for presets that train alike."""
        training = {k: v for k, v in self.to_dict().items()
                    if k in ("base", "task", "batch_size", "max_length", "epochs", "evaluations",
                             "train", "eval", "device")}
        text = json.dumps([training, *map(str, parts)], sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:12]

    @property
    def smoke_reason(self) -> str | None:
        """Why the numbers of this run mean nothing (``--quick``: a smoke run), or ``None``."""
        if self.preset != "quick":
            return None
        return (f"--quick: {self.train_limit} training examples, {self.epochs} epoch, "
                f"{self.seeds} seed{'s' if self.seeds > 1 else ''}; the methods are far from "
                "trained")

    @property
    def data_files(self) -> list[Path]:
        return [Path(getattr(self, key)) for key in self._files() if getattr(self, key)]

    @staticmethod
    def _files() -> list[str]:
        return [f.name for f in fields(StudySettings)
                if f.name in ("train", "eval", "general", "paraphrases", "knowledge")]

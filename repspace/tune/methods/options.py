"""Method options: one dataclass per group, PEFT style (configs apart from the modules that use
them), each field with its help text in its metadata, from which the CLI builds its flags.

A group's fields appear as flat keyword arguments of :func:`repspace.tune.tune` and as flags of
``repspace tune``: ``LoraOptions.r`` is ``lora_r=`` and ``--lora-r`` (``prefix`` + field name;
groups with an empty prefix use the field name alone: ``--include``, ``--second``).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from repspace.errors import InputError
from repspace.utils.options import Options, option


@dataclass
class ScopeOptions(Options):
    """Which parts of a vision-language model a method acts on (every method has these)."""

    include: list[str] = option([], "vision-language models: also tune these parts "
                                "(comma-separated: connector,vision); methods apply to the "
                                "language model only by default")


@dataclass
class LoraOptions(Options):
    """LoRA and DoRA (Hu et al. 2021; Liu et al. 2024), through PEFT."""

    prefix: ClassVar[str] = "lora"
    r: int = option(8, "LoRA/DoRA rank")
    alpha: int = option(16, "LoRA alpha (the update is scaled by alpha / r)")
    dropout: float = option(0.0, "dropout on the LoRA input")
    targets: list[str] | None = option(None, "comma-separated module names (default: PEFT's "
                                       "for the model type, e.g. query,value for BERT; every "
                                       "linear layer of a vision-language model's language "
                                       "model)")


@dataclass
class AdapterOptions(Options):
    """Bottleneck adapters (Houlsby et al. 2019; He et al. 2022), repspace's own."""

    prefix: ClassVar[str] = "adapter"
    reduction: int = option(16, "bottleneck size = hidden size / reduction")


@dataclass
class PrefixOptions(Options):
    """Prefix tuning (Li & Liang 2021), through PEFT."""

    prefix: ClassVar[str] = "prefix"
    tokens: int = option(10, "virtual tokens of the prefix")
    projection: bool = option(False, "reparameterise the prefix through an MLP")
    hidden: int = option(256, "hidden size of the prefix MLP (with --prefix-projection)")
    init: str = option("random", "prefix start: random (PEFT's N(0, 1) keys/values) or "
                       "activations (the base decoder's own keys/values of random vocabulary "
                       "tokens, as Li & Liang initialise from real words)",
                       choices=("random", "activations"))


@dataclass
class PromptOptions(Options):
    """Prompt tuning (Lester et al. 2021), through PEFT."""

    prefix: ClassVar[str] = "prompt"
    tokens: int = option(10, "virtual tokens prepended to the input embeddings")


@dataclass
class PtPeftOptions(Options):
    """PT-PEFT: prefix tuning first, then a second method trained together with the prefix."""

    second: str = option("lora", "pt-peft stage 2 method", choices=("lora", "adapter"))
    stage1_epochs: int | None = option(None, "pt-peft prefix epochs (default: --epochs)")
    stage1_lr: float | None = option(None, "pt-peft prefix learning rate (default: prefix's)")


_TARGETS = ("comma-separated module names (default: PEFT's for the model type, e.g. query,value "
            "for BERT; every linear layer of a vision-language model's language model)")


@dataclass
class AdaLoraOptions(Options):
    """AdaLoRA (Zhang et al. 2023), through PEFT: LoRA in SVD form whose ranks are pruned to a
    budget by importance during training."""

    prefix: ClassVar[str] = "adalora"
    init_r: int = option(12, "AdaLoRA initial rank of every adapted matrix", minimum=1)
    target_r: int = option(8, "AdaLoRA average rank the budget is pruned to", minimum=1)
    alpha: int = option(8, "AdaLoRA alpha (the update is scaled by alpha / initial rank)")
    warmup: float = option(0.1, "AdaLoRA share of the steps before pruning begins (tinit)",
                           minimum=0.0)
    final: float = option(0.2, "AdaLoRA share of the last steps with the ranks fixed (tfinal)",
                          minimum=0.0)
    interval: int = option(1, "AdaLoRA steps between two budget allocations (deltaT)",
                           minimum=1)
    orth_reg: float = option(0.5, "AdaLoRA weight of the orthogonality penalty on A and B",
                             minimum=0.0)
    targets: list[str] | None = option(None, _TARGETS)


@dataclass
class LohaOptions(Options):
    """LoHa (Hyeon-Woo et al. 2022, FedPara), through PEFT: the update is the Hadamard product
    of two low-rank matrices."""

    prefix: ClassVar[str] = "loha"
    r: int = option(8, "LoHa rank of each of the two factors", minimum=1)
    alpha: int = option(8, "LoHa alpha (the update is scaled by alpha / r)")
    rank_dropout: float = option(0.0, "LoHa dropout on the rank dimension")
    module_dropout: float = option(0.0, "LoHa probability of dropping the whole update")
    targets: list[str] | None = option(None, _TARGETS)


@dataclass
class LokrOptions(Options):
    """LoKr (Yeh et al. 2024, LyCORIS), through PEFT: the update is a Kronecker product of a
    small full matrix and a low-rank one."""

    prefix: ClassVar[str] = "lokr"
    r: int = option(8, "LoKr rank of the larger Kronecker factor", minimum=1)
    alpha: int = option(8, "LoKr alpha (the update is scaled by alpha / r)")
    decompose_both: bool = option(False, "LoKr: also factor the smaller Kronecker factor")
    decompose_factor: int = option(-1, "LoKr Kronecker factor size (-1: the divisor nearest "
                                   "the square root of each dimension)")
    targets: list[str] | None = option(None, _TARGETS)


@dataclass
class VeraOptions(Options):
    """VeRA (Kopiczko et al. 2024), through PEFT: frozen shared random low-rank matrices,
    trained scaling vectors per layer."""

    prefix: ClassVar[str] = "vera"
    r: int = option(256, "VeRA rank of the shared random matrices", minimum=1)
    d_initial: float = option(0.1, "VeRA initial value of the rank scaling vector d")
    seed: int = option(0, "VeRA seed of the shared random matrices (projection_prng_key)")
    dropout: float = option(0.0, "VeRA dropout on the input")
    targets: list[str] | None = option(None, _TARGETS)


@dataclass
class OftOptions(Options):
    """OFT (Qiu et al. 2023), through PEFT: a trained block-diagonal orthogonal rotation of
    each adapted layer's input."""

    prefix: ClassVar[str] = "oft"
    block_size: int = option(32, "OFT size of each orthogonal block (the input width is cut "
                             "into width / size blocks)", minimum=2)
    coft: bool = option(False, "constrained OFT: keep the rotation within --oft-eps of the "
                        "identity")
    eps: float = option(6e-5, "COFT freedom of rotation (with --oft-coft)")
    block_share: bool = option(False, "OFT: one rotation shared by all blocks of a layer")
    targets: list[str] | None = option(None, _TARGETS)


@dataclass
class BoftOptions(Options):
    """BOFT (Liu et al. 2024), through PEFT: OFT with butterfly-factorised orthogonal matrices
    and a trained output scale."""

    prefix: ClassVar[str] = "boft"
    block_size: int = option(4, "BOFT size of each orthogonal block", minimum=2)
    butterfly: int = option(1, "BOFT butterfly factors (above 1 needs PEFT's CUDA extension)",
                            minimum=1)
    dropout: float = option(0.0, "BOFT multiplicative dropout of whole blocks")
    targets: list[str] | None = option(None, _TARGETS)


@dataclass
class PtuningOptions(Options):
    """P-tuning (Liu et al. 2021, "GPT Understands, Too"), through PEFT: virtual input tokens
    produced by a trained prompt encoder."""

    prefix: ClassVar[str] = "ptuning"
    tokens: int = option(10, "P-tuning virtual tokens prepended to the input embeddings",
                         minimum=1)
    encoder: str = option("mlp", "P-tuning prompt encoder", choices=("mlp", "lstm"))
    hidden: int = option(128, "P-tuning hidden size of the prompt encoder", minimum=1)
    layers: int = option(2, "P-tuning LSTM layers (with --ptuning-encoder lstm)", minimum=1)


@dataclass
class SelectOptions(Options):
    """Layer-selective tuning: train only chosen blocks of the (language) model."""

    prefix: ClassVar[str] = "select"
    blocks: str = option("last:2", "blocks to train: first:K, last:K, a range A-B (from 0, "
                         "inclusive) or a comma list of block indices")
    part: str = option("all", "what to train in each chosen block",
                       choices=("all", "attention", "mlp"))


@dataclass
class MaskOptions(Options):
    """Importance-masked tuning: a fixed share of each weight matrix trainable."""

    prefix: ClassVar[str] = "mask"
    fraction: float = option(0.05, "share of each weight matrix trained (rounded up per "
                             "matrix)", minimum=0.0)
    by: str = option("magnitude", "which entries: the largest pretrained |W| (magnitude) or "
                     "the largest |gradient| summed over the first --mask-batches steps "
                     "(gradient)", choices=("magnitude", "gradient"))
    batches: int = option(4, "optimizer steps that score gradients (--mask-by gradient); "
                          "nothing is updated in them", minimum=1)


#: Every option group, in the order the CLI lists them.
GROUPS: tuple[type[Options], ...] = (ScopeOptions, SelectOptions, MaskOptions, LoraOptions,
                                     AdaLoraOptions, LohaOptions, LokrOptions, VeraOptions,
                                     OftOptions, BoftOptions, AdapterOptions, PrefixOptions,
                                     PromptOptions, PtuningOptions, PtPeftOptions)


@dataclass
class MethodOptions:
    """The option groups one run uses, by group class (see :func:`parse_options`)."""

    groups: dict[type[Options], Options] = field(default_factory=dict)

    def __getitem__(self, group: type[Options]) -> Any:
        return self.groups.get(group) or group()

    def to_dict(self, used: tuple[type[Options], ...]) -> dict[str, Any]:
        """The groups ``used`` as ``{prefix or "scope"...: fields}`` (the checkpoint's
        ``method_config``)."""
        return {(g.prefix or g.__name__.removesuffix("Options").lower()): self[g].to_dict()
                for g in used}


def parse_options(values: dict[str, Any]) -> MethodOptions:
    """The option groups of flat keywords (``lora_r=16``, ``include=["connector"]``); an
    unknown keyword is an :class:`~repspace.errors.InputError` listing the known ones."""
    rest = dict(values)
    groups = {g: g.from_keywords(rest) for g in GROUPS}
    if rest:
        known = sorted(g.keyword(f.name) for g in GROUPS for f in fields(g))
        raise InputError(f"unknown method option(s) {', '.join(sorted(rest))}; options: "
                         f"{', '.join(known)}")
    return MethodOptions(groups)

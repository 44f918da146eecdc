"""LoRA's relatives through PEFT: AdaLoRA (Zhang et al. 2023, "AdaLoRA: Adaptive Budget
Allocation for Parameter-Efficient Fine-Tuning"), LoHa (Hyeon-Woo et al. 2022, "FedPara:
Low-Rank Hadamard Product for Communication-Efficient Federated Learning"), LoKr (Yeh et al.
2024, "Navigating Text-To-Image Customization: From LyCORIS Fine-Tuning to Model Evaluation")
and VeRA (Kopiczko et al. 2024, "VeRA: Vector-based Random Matrix Adaptation").

Per adapted linear layer W (out x in), the trained entries are: AdaLoRA ``init_r * (in + out +
1)`` (P, Q and the singular values Λ of ΔW = P Λ Q, before pruning), LoHa ``2 * r * (in +
out)`` (ΔW = (B1 A1) ⊙ (B2 A2)), LoKr ``a*c + r*(b + d)`` with out = a*b, in = c*d (ΔW = W1 ⊗
B A; ``b*d`` instead of ``r*(b + d)`` when r >= max(b, d) / 2), VeRA ``r + out`` (ΔW =
diag(b) B diag(d) A, A and B frozen random matrices shared by all layers).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.tune.methods.base import (
    Built,
    Method,
    StepHooks,
    peft_targets,
    register,
    wrap_peft,
)
from repspace.tune.methods.options import (
    AdaLoraOptions,
    LohaOptions,
    LokrOptions,
    MethodOptions,
    VeraOptions,
)

if TYPE_CHECKING:
    import torch
    from torch import nn


def _orthogonality(matrix: torch.Tensor, rows: bool) -> torch.Tensor:
    """||M Mᵀ - I||_F (``rows``) or ||MᵀM - I||_F."""
    import torch

    gram = matrix @ matrix.T if rows else matrix.T @ matrix
    return torch.linalg.matrix_norm(gram - torch.eye(gram.shape[0], device=gram.device))


def build_adalora(model: nn.Module, o: MethodOptions, task: str) -> Built:
    """AdaLoRA with its rank allocation run by the trainer's step hooks: PEFT's
    ``update_and_allocate`` after every update, and the orthogonality penalty R(P, Q) =
    mean ||P Pᵀ - I||_F + ||QᵀQ - I||_F added to the gradient (PEFT adds it only to a loss the
    model returns, which repspace's task models compute themselves). The step counts
    (tinit, tfinal, total_step) are set from the run's length at the first step."""
    import peft

    ao = o[AdaLoraOptions]
    # total_step is only known to the trainer: a placeholder until the first step
    config = peft.AdaLoraConfig(init_r=ao.init_r, target_r=ao.target_r, lora_alpha=ao.alpha,
                                deltaT=ao.interval, orth_reg_weight=ao.orth_reg, total_step=1,
                                target_modules=peft_targets(model, o, ao.targets))
    built = wrap_peft(model, config)
    tuner = built.peft_model.base_model
    live = built.peft_model.peft_config["default"]

    def before(step: int, total: int) -> None:
        if live.total_step != total:  # the first step of this run (or of a resumed one)
            final = int(ao.final * total)
            live.total_step, live.tfinal = total, final
            live.tinit = min(int(ao.warmup * total), max(total - final - 1, 0))
        factors = [(n, p) for n, p in tuner.named_parameters()
                   if p.requires_grad and (".lora_A." in n or ".lora_B." in n)]
        if ao.orth_reg and factors:
            penalty = sum(_orthogonality(p, ".lora_A." in n) for n, p in factors)
            (ao.orth_reg * penalty / len(factors)).backward()

    def after(step: int, total: int) -> None:
        tuner.update_and_allocate(step)

    built.hooks = StepHooks(before=before, after=after)
    return built


def build_loha(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    lo = o[LohaOptions]
    return wrap_peft(model, peft.LoHaConfig(
        r=lo.r, alpha=lo.alpha, rank_dropout=lo.rank_dropout, module_dropout=lo.module_dropout,
        target_modules=peft_targets(model, o, lo.targets)))


def build_lokr(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    lo = o[LokrOptions]
    return wrap_peft(model, peft.LoKrConfig(
        r=lo.r, alpha=lo.alpha, decompose_both=lo.decompose_both,
        decompose_factor=lo.decompose_factor, target_modules=peft_targets(model, o, lo.targets)))


def build_vera(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    vo = o[VeraOptions]
    return wrap_peft(model, peft.VeraConfig(
        r=vo.r, d_initial=vo.d_initial, projection_prng_key=vo.seed, vera_dropout=vo.dropout,
        save_projection=True, target_modules=peft_targets(model, o, vo.targets)))


register(Method("adalora", "reparameterized",
                "AdaLoRA (PEFT): LoRA in SVD form, ranks pruned to a budget by importance",
                5e-4, build_adalora, (AdaLoraOptions,)))
register(Method("loha", "reparameterized",
                "LoHa (PEFT): Hadamard product of two low-rank updates", 5e-4, build_loha,
                (LohaOptions,)))
register(Method("lokr", "reparameterized",
                "LoKr (PEFT): Kronecker product of a small and a low-rank update", 5e-4,
                build_lokr, (LokrOptions,)))
register(Method("vera", "reparameterized",
                "VeRA (PEFT): shared frozen random low-rank matrices, trained scaling vectors",
                5e-3, build_vera, (VeraOptions,)))

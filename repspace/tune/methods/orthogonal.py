"""Orthogonal fine-tuning through PEFT: OFT (Qiu et al. 2023, "Controlling Text-to-Image
Diffusion by Orthogonal Finetuning") and BOFT (Liu et al. 2024, "Parameter-Efficient
Orthogonal Finetuning via Butterfly Factorization").

Both rotate the input of each adapted linear layer W (out x in) by a trained orthogonal matrix
R, W' = W R, which keeps the angles between W's neurons (its hyperspherical energy). OFT's R is
block-diagonal with in / b blocks of size b, each the Cayley transform of a skew-symmetric
matrix: ``(in / b) * b * (b - 1) / 2`` trained entries per layer. BOFT's R is a product of
m butterfly factors, each block-diagonal with in / b dense b x b blocks, times a trained
output scale: ``m * (in / b) * b * b + out`` entries per layer.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from repspace.errors import InputError
from repspace.tune.methods.base import Built, Method, peft_targets, register, wrap_peft
from repspace.tune.methods.options import BoftOptions, MethodOptions, OftOptions

if TYPE_CHECKING:
    from torch import nn


def build_oft(model: nn.Module, o: MethodOptions, task: str) -> Built:
    import peft

    oo = o[OftOptions]
    return wrap_peft(model, peft.OFTConfig(
        r=0, oft_block_size=oo.block_size, coft=oo.coft, eps=oo.eps, block_share=oo.block_share,
        target_modules=peft_targets(model, o, oo.targets)))


def build_boft(model: nn.Module, o: MethodOptions, task: str) -> Built:
    """BOFT; PEFT uses a single butterfly factor when its CUDA extension (built with ninja on
    first use) is missing, so more than one is an error there rather than a silent change."""
    import peft
    from peft.tuners.boft.layer import BOFTLayer

    bo = o[BoftOptions]
    config = peft.BOFTConfig(boft_block_size=bo.block_size, boft_n_butterfly_factor=bo.butterfly,
                             boft_dropout=bo.dropout,
                             target_modules=peft_targets(model, o, bo.targets))
    built = wrap_peft(model, config)
    layers = [m for m in built.module.modules() if isinstance(m, BOFTLayer)]
    if bo.butterfly > 1 and not all(m.fbd_cuda_available for m in layers):
        raise InputError(f"boft: --boft-butterfly {bo.butterfly} needs PEFT's CUDA extension "
                         "for BOFT (CUDA and ninja); use --boft-butterfly 1 here")
    return built


register(Method("oft", "reparameterized",
                "OFT (PEFT): block-diagonal orthogonal rotation of each layer's input", 1e-3,
                build_oft, (OftOptions,)))
register(Method("boft", "reparameterized",
                "BOFT (PEFT): butterfly-factorised orthogonal rotation and an output scale", 1e-3,
                build_boft, (BoftOptions,)))

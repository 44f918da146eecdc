"""Options of weight merging (:func:`repspace.models.merging.merge_weights`); the library's
signature and the flags of ``repspace merge-weights`` take their defaults from here."""

from __future__ import annotations

from dataclasses import dataclass

from repspace.utils.options import Options, option

#: How several weight deltas are combined (see :mod:`repspace.models.merging`).
MERGE_METHODS = ("linear", "ties", "dare-linear", "dare-ties")


@dataclass
class MergeOptions(Options):
    """Merging: how tuned models are interpolated with their base or combined."""

    alpha: list[float] = option([1.0], "weight of each tuned model's change (one value for all, "
                                "or one per model): 0 is the base, 1 the tuned model; WiSE-FT "
                                "interpolation for one model, task arithmetic for several")
    how: str = option("linear", "linear (interpolation / task arithmetic), ties, dare-linear "
                      "or dare-ties (PEFT's merge functions on the weight deltas)",
                      choices=MERGE_METHODS)
    density: float = option(0.5, "share of each delta kept by ties / dare (by magnitude for "
                            "ties, at random for dare)")
    seed: int = option(0, "seed of DARE's random drop")

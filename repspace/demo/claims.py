"""The claim checks of a study, each with its numbers, a 95% CI, a test and a verdict.

The claim (Kim et al. 2024, PT-PEFT, arXiv:2411.00029): LoRA and adapters bend the pretrained
representation space, prefix tuning keeps it, and PT-PEFT (prefix first, then LoRA / adapters)
gets the task score of the first with the preservation of the second. Representation checks are
decided on the task inputs (the paper's setting) and repeated on general text (stricter: inputs
the tuning never saw); score checks on the task's eval set; forgetting checks on the general
measures; the trajectory checks compare arms at the task score both reach. Decoder studies
also decide the CKA checks on the last token's hidden state (probe sets ``task, last token``
and ``general, last token``): the state the next token is generated from.

Verdicts: ``✓`` the 95% CI lies on the claim's side of the threshold; ``~`` the estimate does
but the CI crosses it (not resolved at this sample size); ``✗`` the estimate is on the other
side.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from scipy import special, stats

from repspace import metrics

#: How much lower PT-PEFT's task score may be and still "match" (1 point).
SCORE_MARGIN = 0.01
#: A score still rising by more than this between the last two evaluations has not plateaued.
PLATEAU_GAIN = 0.01
#: A rise past ``PLATEAU_GAIN`` is beyond the eval set's noise when its paired test gives p below.
PLATEAU_ALPHA = 0.05


def verdict(estimate: float, low: float | None, threshold: float = 0.0) -> str:
    """``✓`` when the CI's lower bound clears ``threshold``, ``~`` when only the estimate does,
    else ``✗`` (every check is stated so that larger supports the claim)."""
    if low is not None and low > threshold:
        return "✓"
    return "~" if estimate > threshold else "✗"


def _z_p(estimate: float, low: float, high: float, threshold: float = 0.0) -> float:
    """One-sided p of estimate > threshold under the normal approximation whose 95% interval is
    [low, high] (SE = (high - low) / (2 z_0.975))."""
    se = (high - low) / (2 * float(special.ndtri(0.975)))
    if se <= 0:
        return 0.0 if estimate > threshold else 1.0
    return float(special.ndtr(-(estimate - threshold) / se))


def representation_check(claim: str, probe_set: str, statistic: Callable[..., float],
                         base: np.ndarray, kept: Sequence[np.ndarray], bent: Sequence[np.ndarray],
                         *, labels: tuple[str, str], n_boot: int, what: str) -> dict[str, Any]:
    """Does arm ``labels[0]`` (features ``kept``, one array per seed) keep more of the base
    space than ``labels[1]`` (``bent``)? The statistic is the seed mean of
    ``statistic(base, tuned)`` of the first minus that of the second; CI: paired bootstrap over
    the probe samples (normal interval, as duplicated rows bias CKA); test: one-sided exact
    permutation test over seeds when each arm has at least 3, else the bootstrap z-test."""
    def difference(base_rows: np.ndarray, *tuned: np.ndarray) -> float:
        a, b = tuned[:len(kept)], tuned[len(kept):]
        return (float(np.mean([statistic(base_rows, t) for t in a]))
                - float(np.mean([statistic(base_rows, t) for t in b])))

    estimate, low, high = metrics.bootstrap_ci(difference, base, *kept, *bent, n_boot=n_boot,
                                               seed=0, method="normal")
    values = ([statistic(base, t) for t in kept], [statistic(base, t) for t in bent])
    if min(len(kept), len(bent)) >= 3:
        p = metrics.permutation_test(values[0], values[1], alternative="greater")
        test = f"permutation over seeds, p = {p:.3f}"
    else:
        p = _z_p(estimate, low, high)
        test = f"bootstrap z-test, p = {p:.3f}"
    return {"claim": claim, "probe_set": probe_set, "kind": "representation",
            "numbers": f"{what}: {labels[0]} {np.mean(values[0]):.3f}, "
                       f"{labels[1]} {np.mean(values[1]):.3f}",
            "values": {labels[0]: float(np.mean(values[0])), labels[1]: float(np.mean(values[1]))},
            "estimate": estimate, "ci": [low, high], "p": p, "test": test,
            "verdict": verdict(estimate, low)}


def proportion_check(claim: str, probe_set: str, higher: tuple[str, float],
                     lower: tuple[str, float], n: int, *, margin: float = 0.0,
                     what: str) -> dict[str, Any]:
    """Is the proportion of ``higher`` (label, value) above that of ``lower`` minus ``margin``?
    ``n`` items behind each (questions x seeds). CI: normal interval of the difference of two
    proportions; test: one-sided z-test (non-inferiority when ``margin`` > 0)."""
    (a_label, a), (b_label, b) = higher, lower
    se = math.sqrt(max(a * (1 - a) + b * (1 - b), 1e-12) / n)
    half = float(special.ndtri(0.975)) * se
    estimate = a - b
    p = float(special.ndtr(-(estimate + margin) / se))
    kind = f"non-inferiority z-test (margin {margin:.2f})" if margin else "two-proportion z-test"
    return {"claim": claim, "probe_set": probe_set, "kind": "score",
            "numbers": f"{what}: {a_label} {a:.3f}, {b_label} {b:.3f}",
            "values": {a_label: a, b_label: b}, "estimate": estimate,
            "ci": [estimate - half, estimate + half], "p": p, "test": f"{kind}, p = {p:.3f}",
            "verdict": verdict(estimate, estimate - half, -margin)}


def mcnemar(before: Sequence[int], after: Sequence[int]) -> tuple[int, int, float]:
    """McNemar's exact one-sided test that ``after`` (0/1 hits on the same examples) scores
    higher than ``before``: ``gained`` examples turned right, ``lost`` turned wrong, and
    p = P(Binomial(gained + lost, 1/2) >= gained) (1 when nothing changed); smaller p means
    stronger evidence of a real gain."""
    moves = np.asarray(after, dtype=int) - np.asarray(before, dtype=int)
    gained, lost = int(np.sum(moves > 0)), int(np.sum(moves < 0))
    if not gained + lost:
        return gained, lost, 1.0
    return gained, lost, float(stats.binomtest(gained, gained + lost, 0.5,
                                               alternative="greater").pvalue)


def plateau(histories: Sequence[Sequence[dict[str, Any]]]) -> dict[str, Any]:
    """Had an arm's task score plateaued? ``histories``: one trainer history per seed (records
    with ``accuracy`` or ``exact_match`` and ``eval_hits``, each example's 0/1 hit).

    ``last_gain``: the rise between the last two evaluations, mean over seeds; ``plateaued``:
    it is at most ``PLATEAU_GAIN`` (1 point). A larger rise may be a few answers of a small
    eval set, so it is tested: ``gained`` / ``lost`` count the examples that turned right /
    wrong between the two evaluations (summed over seeds) and ``p`` is McNemar's exact
    one-sided test of the rise (:func:`mcnemar`); ``still_rising``: not plateaued and
    p < ``PLATEAU_ALPHA`` (still learning, beyond noise). ``p`` is ``None`` without per-example
    hits; ``last_gain`` is ``None`` with fewer than two evaluations.
    """
    pairs = []
    for history in histories:
        scored = [h for h in history if "accuracy" in h or "exact_match" in h]
        if len(scored) >= 2:
            pairs.append(scored[-2:])
    if not pairs:
        return {"last_gain": None, "plateaued": False, "still_rising": False, "gained": None,
                "lost": None, "p": None}
    gain = float(np.mean([after.get("accuracy", after.get("exact_match"))
                          - before.get("accuracy", before.get("exact_match"))
                          for before, after in pairs]))
    out: dict[str, Any] = {"last_gain": gain, "plateaued": gain <= PLATEAU_GAIN,
                           "gained": None, "lost": None, "p": None}
    if all("eval_hits" in h for pair in pairs for h in pair):
        gained, lost, p = mcnemar([h for before, _ in pairs for h in before["eval_hits"]],
                                  [h for _, after in pairs for h in after["eval_hits"]])
        out |= {"gained": gained, "lost": lost, "p": p}
    out["still_rising"] = not out["plateaued"] and (out["p"] is None or out["p"] < PLATEAU_ALPHA)
    return out


def score_at(trajectory: Sequence[dict[str, float]], score: float) -> float | None:
    """The preservation of a trajectory (points ``{"score", "cka"}`` in training order, the
    base first) when its task score first reaches ``score``, linearly interpolated between the
    evaluations around that moment; ``None`` if it never does."""
    if trajectory[0]["score"] >= score:
        return trajectory[0]["cka"]
    for before, after in itertools.pairwise(trajectory):
        if after["score"] >= score:
            t = (score - before["score"]) / (after["score"] - before["score"])
            return before["cka"] + t * (after["cka"] - before["cka"])
    return None


def trajectory_check(claim: str, kept: tuple[str, list[dict]],
                     bent: tuple[str, list[dict]]) -> dict[str, Any]:
    """At the highest task score both trajectories reach, does ``kept`` hold more CKA to the
    base (task inputs, last layer) than ``bent``? One trajectory per arm (seed 0): no CI, no
    test; ``~`` when neither got past the base's score (nothing to compare)."""
    (a_label, a), (b_label, b) = kept, bent
    target = min(max(p["score"] for p in a[1:]), max(p["score"] for p in b[1:]))
    row = {"claim": claim, "probe_set": "task", "kind": "trajectory", "ci": None, "p": None,
           "test": "n/a (one trajectory per arm)"}
    if target <= a[0]["score"]:
        return {**row, "numbers": f"neither passed the base's score {a[0]['score']:.3f}",
                "values": {a_label: None, b_label: None, "score": target},
                "estimate": None, "verdict": "~"}
    ca, cb = score_at(a, target), score_at(b, target)
    return {**row, "numbers": f"CKA at score {target:.3f}: {a_label} {ca:.3f}, "
                              f"{b_label} {cb:.3f}",
            "values": {a_label: ca, b_label: cb, "score": target}, "estimate": ca - cb,
            "verdict": "✓" if ca > cb else "✗"}


def summarise(checks: list[dict[str, Any]]) -> dict[str, Any]:
    """Overall verdict per probe set: ``supported`` (every check ✓), ``contradicted`` (some
    ✗), else ``not resolved``."""
    out: dict[str, Any] = {}
    for probe_set in dict.fromkeys(c["probe_set"] for c in checks):
        marks = [c["verdict"] for c in checks if c["probe_set"] == probe_set]
        out[probe_set] = ("supported" if all(m == "✓" for m in marks) else
                          "contradicted" if "✗" in marks else "not resolved")
    return out

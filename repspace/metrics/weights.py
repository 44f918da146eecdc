"""Weight space: how tuning changed one weight matrix, dW = W_tuned - W_base. No data needed.

Everything is computed in float64 from the given arrays. Matrices are taken as stored (for a
``torch.nn.Linear`` weight: out x in, so its *left* singular vectors live in the output space).

References: Shuttleworth, Andreas, Torralba & Sharma 2024, "LoRA vs Full Fine-tuning: An
Illusion of Equivalence" (arXiv:2410.21228; intruder dimensions); Biderman et al. 2024, "LoRA
Learns Less and Forgets Less" (spectra and rank of dW); Roy & Vetterli 2007 (effective rank).

Numerical rank convention: a singular value counts when it exceeds
``max(atol, rtol * s_1)`` with ``rtol = max(m, n) * eps`` by default, numpy's
``matrix_rank`` default. For dW of stored weights, :func:`weight_change` uses the machine epsilon
``eps`` of the dtype the weights were stored in (float32: 1.19e-7) and adds
``atol = eps * ||W_tuned||_F``: rounding the tuned matrix to that dtype perturbs every singular
value of dW by at most ``||E||_2 <= ||E||_F <= (eps / 2) ||W_tuned||_F`` (Weyl), so a rank-r
update stored in float32 still measures rank r instead of full rank.
"""

from __future__ import annotations

from dataclasses import dataclass
from numbers import Real
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics._validate import as_matrix, check_fraction, real_array
from repspace.metrics.alignment import subspace_angles
from repspace.metrics.spectrum import effective_rank_from_spectrum, energy_count

Side = Literal["left", "right"]


@dataclass(frozen=True)
class Intruders:
    """Intruder dimensions of a tuned matrix (see :func:`intruder_dimensions`).

    Attributes
    ----------
    count : int
        How many of the top-k tuned singular vectors are intruders.
    indices : list[int]
        Their positions among the tuned singular vectors (0 = largest singular value).
    max_cosines : list[float]
        For each of the top-k tuned singular vectors, max_i |cos(tuned_j, base_i)|.
    energy_share : float
        sum_{j intruder} s_j^2 / sum_j s_j^2 over the singular values s of W_tuned: the share of
        the tuned matrix's spectral (Frobenius) energy that the intruders carry.
    """

    count: int
    indices: list[int]
    max_cosines: list[float]
    energy_share: float


def _pair(W_base: ArrayLike, W_tuned: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    A = real_array(W_base, "W_base")
    B = real_array(W_tuned, "W_tuned")
    if A.shape != B.shape:
        raise InputError(f"W_base and W_tuned must have the same shape: {A.shape} != {B.shape}")
    if A.size == 0:
        raise InputError(f"W_base is empty (shape {A.shape})")
    return A, B


def _matrix_pair(W_base: ArrayLike, W_tuned: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    A, B = _pair(W_base, W_tuned)
    return as_matrix(A, "W_base"), as_matrix(B, "W_tuned")


def _count(value: int, name: str, upper: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < 1:
        raise InputError(f"{name} must be a positive integer, got {value!r}")
    if value > upper:
        raise InputError(f"{name}={value} exceeds {what} ({upper})")
    return int(value)


def _ratio(numerator: float, denominator: float) -> float:
    return numerator / denominator if denominator > 0 else float("nan")


def delta_norms(W_base: ArrayLike, W_tuned: ArrayLike) -> dict[str, float]:
    """Size of the change dW = W_tuned - W_base, absolute and relative to W_base.

    For any shape: ``norm_base`` = ||W_base||_F, ``dw_frobenius`` = ||dW||_F and
    ``rel_frobenius`` = ||dW||_F / ||W_base||_F (the L2 norm for vectors such as biases).
    For matrices also ``dw_spectral`` = ||dW||_2 (largest singular value) and
    ``rel_spectral`` = ||dW||_2 / ||W_base||_2. A relative norm is NaN when W_base is zero.

    Returns
    -------
    dict[str, float]
        0 means unchanged; larger means tuning moved the weights further.

    Notes
    -----
    The relative norms are invariant to scaling both matrices by one factor and to orthogonal
    transforms applied to both (left or right); the absolute ones scale with the factor.
    """
    A, B = _pair(W_base, W_tuned)
    if A.ndim != 2:
        return _norms(A, B - A, None, None)
    return _norms(A, B - A, np.linalg.svd(B - A, compute_uv=False),
                  np.linalg.svd(A, compute_uv=False))


def _norms(A: np.ndarray, dW: np.ndarray, s_dw: np.ndarray | None,
           s_base: np.ndarray | None) -> dict[str, float]:
    """:func:`delta_norms` from dW and, for matrices, the singular values of dW and W_base."""
    out = {"norm_base": float(np.linalg.norm(A)), "dw_frobenius": float(np.linalg.norm(dW))}
    out["rel_frobenius"] = _ratio(out["dw_frobenius"], out["norm_base"])
    if s_dw is not None and s_base is not None:
        out["dw_spectral"] = float(s_dw[0])
        out["rel_spectral"] = _ratio(out["dw_spectral"], float(s_base[0]))
    return out


def numerical_rank(M: ArrayLike, *, rtol: float | None = None, atol: float = 0.0) -> int:
    """Number of singular values of M above ``max(atol, rtol * s_1)``.

    With the defaults (``rtol = max(m, n) * eps(float64)``, ``atol = 0``) this is
    ``numpy.linalg.matrix_rank``. For a difference of stored weights pass the epsilon of their
    dtype (see the module doc and :func:`weight_change`).

    Returns
    -------
    int
        In [0, min(m, n)]; 0 for a zero matrix.
    """
    M = as_matrix(M, "M")
    return _rank(np.linalg.svd(M, compute_uv=False), M.shape, rtol, atol)


def _rank(s: np.ndarray, shape: tuple[int, ...], rtol: float | None, atol: float) -> int:
    rtol = max(shape) * np.finfo(np.float64).eps if rtol is None else rtol
    if s.size == 0 or s[0] == 0:
        return 0
    return int(np.count_nonzero(s > max(atol, rtol * s[0])))


def energy_rank(singular_values: ArrayLike, energy: float = 0.9) -> int:
    """Smallest k with s_1^2 + ... + s_k^2 >= energy * sum_i s_i^2 (spectral energy =
    squared singular values, i.e. the Frobenius norm squared).

    Parameters
    ----------
    singular_values : array-like
        Non-negative singular values (any order; they are sorted descending).
    energy : float
        Fraction of the energy to reach, in (0, 1].

    Returns
    -------
    int
        In [1, number of non-zero values]; 0 when all are zero. Lower means the change is
        concentrated in fewer directions.
    """
    energy = check_fraction(energy, "energy")
    s = np.sort(real_array(singular_values, "singular_values").ravel())[::-1]
    if (s < 0).any():
        raise InputError("singular_values must be non-negative")
    power = s**2
    if power.sum() == 0:
        return 0
    return energy_count(power, energy)


def _singular_vectors(U: np.ndarray, Vt: np.ndarray, side: Side) -> np.ndarray:
    if side == "left":
        return U
    if side == "right":
        return Vt.T
    raise InputError(f'side must be "left" or "right", got {side!r}')


def _intruders(base_vectors: np.ndarray, tuned_vectors: np.ndarray, s_tuned: np.ndarray,
               k: int, epsilon: float) -> Intruders:
    """Intruders among the first k columns of ``tuned_vectors`` against all ``base_vectors``."""
    max_cos = np.abs(tuned_vectors[:, :k].T @ base_vectors).max(axis=1)
    indices = np.flatnonzero(max_cos < epsilon)
    power = s_tuned**2
    return Intruders(count=int(indices.size), indices=indices.tolist(),
                     max_cosines=max_cos.tolist(),
                     energy_share=_ratio(float(power[indices].sum()), float(power.sum())))


def _check_epsilon(epsilon: float) -> float:
    if isinstance(epsilon, bool) or not isinstance(epsilon, Real) or not 0 < epsilon <= 1:
        raise InputError(f"epsilon must be in (0, 1], got {epsilon!r}")
    return float(epsilon)


def intruder_dimensions(W_base: ArrayLike, W_tuned: ArrayLike, *, k: int = 10,
                        epsilon: float = 0.5, side: Side = "left") -> Intruders:
    """Intruder dimensions of Shuttleworth et al. 2024 ("LoRA vs Full Fine-tuning: An Illusion
    of Equivalence", arXiv:2410.21228).

    With W_base = U S V^T and W_tuned = U' S' V'^T (thin SVDs), tuned singular vector j
    (j < k, in order of decreasing singular value) is an intruder when
    max_i |cos(u'_j, u_i)| = max_i |u'_j . u_i| < epsilon over ALL base singular vectors u_i.
    The paper's defaults and its code compare the top k = 10 left singular vectors with
    epsilon = 0.5 (they also sweep epsilon).

    Parameters
    ----------
    W_base, W_tuned : array-like, shape (m, n)
    k : int
        How many top tuned singular vectors to test, 1 <= k <= min(m, n).
    epsilon : float
        Cosine threshold in (0, 1].
    side : {"left", "right"}
        Left (column space, the output side of a Linear weight; the paper's choice) or right
        singular vectors.

    Returns
    -------
    Intruders
        ``count`` (0 = every top direction of the tuned matrix is close to a pretrained one;
        higher = more new, high-ranking directions), the intruders' indices, the top-k max
        cosines and the share of the tuned matrix's spectral energy the intruders carry.

    Notes
    -----
    Invariant to scaling either matrix and to one orthogonal transform applied to both (on
    the tested side). If the base has repeated singular values its singular vectors are not
    unique and the cosines are not meaningful.
    """
    A, B = _matrix_pair(W_base, W_tuned)
    k = _count(k, "k", min(A.shape), "min(m, n) of the matrices")
    epsilon = _check_epsilon(epsilon)
    Ua, _, Vta = np.linalg.svd(A, full_matrices=False)
    Ub, sb, Vtb = np.linalg.svd(B, full_matrices=False)
    return _intruders(_singular_vectors(Ua, Vta, side), _singular_vectors(Ub, Vtb, side), sb,
                      k, epsilon)


def _top_subspace_angles(base_vectors: np.ndarray, s_base: np.ndarray,
                         tuned_vectors: np.ndarray, s_tuned: np.ndarray, k: int,
                         shape: tuple[int, ...]) -> np.ndarray:
    for name, s in (("W_base", s_base), ("W_tuned", s_tuned)):
        rank = _rank(s, shape, None, 0.0)
        if k > rank:
            raise InputError(f"k={k} exceeds the rank of {name} ({rank}): its top-k singular "
                             "subspace is undefined")
    return subspace_angles(base_vectors[:, :k], tuned_vectors[:, :k])


def singular_subspace_angles(W_base: ArrayLike, W_tuned: ArrayLike, k: int, *,
                             side: Side = "left") -> np.ndarray:
    """Principal angles between the top-k singular subspaces of W_base and W_tuned.

    theta_i = arccos(sigma_i(U_k^T U'_k)) with U_k, U'_k the top-k left (or right) singular
    vectors (:func:`repspace.metrics.alignment.subspace_angles`; Bjorck & Golub 1973).

    Parameters
    ----------
    W_base, W_tuned : array-like, shape (m, n)
    k : int
        Subspace dimension, at most the rank of each matrix.
    side : {"left", "right"}

    Returns
    -------
    numpy.ndarray, shape (k,)
        Radians, ascending, in [0, pi/2]. All zero means tuning kept the top-k subspace;
        larger means it rotated further.

    Notes
    -----
    Invariant to scaling either matrix and to one orthogonal transform applied to both.
    """
    A, B = _matrix_pair(W_base, W_tuned)
    k = _count(k, "k", min(A.shape), "min(m, n) of the matrices")
    Ua, sa, Vta = np.linalg.svd(A, full_matrices=False)
    Ub, sb, Vtb = np.linalg.svd(B, full_matrices=False)
    return _top_subspace_angles(_singular_vectors(Ua, Vta, side), sa,
                                _singular_vectors(Ub, Vtb, side), sb, k, A.shape)


def check_weight_options(k: int, epsilon: float, top: int, energy: float) -> None:
    """Raise :class:`InputError` unless k, top are positive integers, epsilon and energy in
    (0, 1] (the options of :func:`weight_change`)."""
    for name, value in (("k", k), ("top", top)):
        _count(value, name, np.iinfo(np.int64).max, "")
    _check_epsilon(epsilon)
    check_fraction(energy, "energy")


def weight_change(W_base: ArrayLike, W_tuned: ArrayLike, *, k: int = 10, epsilon: float = 0.5,
                  top: int = 10, energy: float = 0.9, eps: float | None = None,
                  side: Side = "left") -> dict[str, Any]:
    """Every weight-space number of one matrix, from one SVD of W_base, W_tuned and dW each.

    Parameters
    ----------
    W_base, W_tuned : array-like, shape (m, n)
    k, epsilon : int, float
        Intruder dimensions (:func:`intruder_dimensions`); k is capped at min(m, n).
    top : int
        Dimension of the singular subspaces whose principal angles are reported (capped at the
        numerical ranks of W_base and W_tuned; no angles, NaN, if one of them is zero).
    energy : float
        Energy fraction of :func:`energy_rank`.
    eps : float, optional
        Machine epsilon of the dtype the weights were stored in (default float64's); sets the
        numerical-rank tolerance ``max(eps * ||W_tuned||_F, max(m, n) * eps * s_1(dW))``.
    side : {"left", "right"}
        Singular vectors used for intruders and angles.

    Returns
    -------
    dict
        The :func:`delta_norms` keys; ``numerical_rank``, ``effective_rank`` (Roy & Vetterli, of
        the dW spectrum; NaN if dW = 0), ``energy_rank`` of dW; ``intruders``,
        ``intruder_share`` (:class:`Intruders`); ``angle_max_deg``, ``angle_mean_deg`` of the
        top subspaces; and the lists ``spectrum`` (singular values of dW),
        ``intruder_max_cos`` and ``angles_deg``.
    """
    A, B = _matrix_pair(W_base, W_tuned)
    check_weight_options(k, epsilon, top, energy)
    eps = np.finfo(np.float64).eps if eps is None else float(eps)
    dW = B - A
    s_dw = np.linalg.svd(dW, compute_uv=False)
    Ua, sa, Vta = np.linalg.svd(A, full_matrices=False)
    Ub, sb, Vtb = np.linalg.svd(B, full_matrices=False)
    k = min(k, *A.shape)
    top = min(top, _rank(sa, A.shape, None, 0.0), _rank(sb, B.shape, None, 0.0))
    base_vectors, tuned_vectors = _singular_vectors(Ua, Vta, side), _singular_vectors(Ub, Vtb, side)
    intruders = _intruders(base_vectors, tuned_vectors, sb, k, epsilon)
    angles = np.degrees(_top_subspace_angles(base_vectors, sa, tuned_vectors, sb, top, A.shape)
                        if top else np.empty(0))
    atol = eps * float(np.linalg.norm(B))
    return {
        **_norms(A, dW, s_dw, sa),
        "numerical_rank": _rank(s_dw, dW.shape, max(dW.shape) * eps, atol),
        "effective_rank": effective_rank_from_spectrum(s_dw) if s_dw.any() else float("nan"),
        "energy_rank": energy_rank(s_dw, energy),
        "intruders": intruders.count,
        "intruder_share": intruders.energy_share,
        "angle_max_deg": float(angles.max()) if top else float("nan"),
        "angle_mean_deg": float(angles.mean()) if top else float("nan"),
        "spectrum": s_dw.tolist(),
        "intruder_max_cos": intruders.max_cosines,
        "angles_deg": angles.tolist(),
    }


def tensor_spectrum(T: ArrayLike, *, energy: float = 0.9, eps: float | None = None
                    ) -> dict[str, Any]:
    """Size and spectrum of a tensor added by tuning (adapter weights, prefix embeddings).

    Returns ``norm`` (Frobenius) and, for a matrix, ``numerical_rank`` (numpy's convention
    with ``eps`` of the stored dtype), ``effective_rank``, ``energy_rank`` and ``spectrum``
    (singular values, descending).
    """
    T = real_array(T, "T")
    out: dict[str, Any] = {"norm": float(np.linalg.norm(T))}
    if T.ndim == 2 and min(T.shape) > 0:
        eps = np.finfo(np.float64).eps if eps is None else float(eps)
        s = np.linalg.svd(T, compute_uv=False)
        out.update(numerical_rank=_rank(s, T.shape, max(T.shape) * eps, 0.0),
                   effective_rank=effective_rank_from_spectrum(s) if s.any() else float("nan"),
                   energy_rank=energy_rank(s, energy), spectrum=s.tolist())
    return out

"""Exact metrics from moments accumulated over chunks, and minibatch CKA.

Linear CKA (biased and debiased), singular spectra, effective rank and the orthogonal
Procrustes distance depend on the data only through a few sums that can be accumulated chunk
by chunk in float64, so they are computed exactly (up to rounding) in memory that does not
grow with the number of samples n. The sums' large products run in float32 by default
(``precision="float32"``, summed in float64: CKA within about 1e-7 of the exact value;
:mod:`repspace.metrics._backend`) or in float64 (``precision="float64"``, exact). Two
accumulators cover the two shapes of data:

- :class:`CovarianceMoments` (n >= d, the usual case): fed chunks of rows. Per layer it keeps
  the column sums s and X^T X (d x d), and X_cat^T Y_cat for every pair of an X layer and a Y
  layer, plus what the debiased estimator needs (below). Memory: 8 (D_x D_y + sum_l d_l^2)
  bytes plus lower-order terms, with D_x, D_y the summed widths of the X and Y layers.
- :class:`GramMoments` (n < d): fed blocks of columns, every block holding all n rows. Per
  layer it keeps the n x n Gram matrix of the centred features (each column block is centred
  exactly, since it holds all rows). Memory: 8 n^2 bytes per layer. Column blocks and not
  row chunks because the Gram matrix of row chunks needs every pair of chunks at once.

Centring in one pass. Rows are shifted by a per-layer vector c (the mean of the first chunk)
before anything is summed; the centred moments then follow exactly from the shifted ones, e.g.
Xc^T Yc = X^T Y - s_x s_y^T / n, while the shift keeps the cancellation in that subtraction
small when the features have large means (the "shifted data" algorithm for variances).
Within a chunk, each block of rows is moreover centred on its own means d before its products
are formed (in ``precision``), and the float64 rank-one terms b d_x d_y^T (b rows) restore the
shifted moments: the float32 products only ever see centred data, even where the first chunk
is unrepresentative. (The debiased estimator's row-norm terms below use the shifted rows and
lose digits, in either precision, when the first chunk lies many spreads from the mean.)

Debiased HSIC from moments. For centred features the unbiased estimator of Song et al. 2012
reduces to (see :mod:`repspace.metrics.cka`)

    n (n - 3) HSIC_1 = ||Xc^T Yc||_F^2 - n / (n - 2) r_x . r_y + sum(r_x) sum(r_y) / ((n-1)(n-2)),

with r_x the squared row norms of Xc (HSIC_1 is unchanged by centring, since U-centring removes
any K + a 1^T + 1 a^T). With a_i = ||x_i||^2, b_i = ||y_i||^2 of the shifted rows,
mu_x = s_x / n, m_x = ||mu_x||^2 (and likewise for y), r_x,i = a_i - 2 x_i . mu_x + m_x, so

    r_x . r_y = sum_i a_i b_i - 2 mu_y . (Y^T a) - 2 mu_x . (X^T b) + 4 mu_x^T (X^T Y) mu_y
                + m_y sum(a) + m_x sum(b) - 3 n m_x m_y,
    sum(r_x) = sum(a) - n m_x = tr(X^T X) - n m_x,

and every term on the right is a sum over rows: sum_i a_i b_i, the vectors X^T b and Y^T a and
the matrices already kept. Both accumulators finish on the CPU in float64; their products run
where ``device`` says (:mod:`repspace.metrics._backend`).

Spectra come from the eigenvalues of the centred covariance Xc^T Xc (or the centred Gram):
s_i = sqrt(lambda_i). Eigenvalues below max(n, d) * eps * lambda_max are rounding noise and set
to 0, so singular values below about sqrt(max(n, d) * eps) * s_1 (~1e-6 s_1) read as 0; the
larger ones match an SVD of the data to ~1e-12 relative.

Minibatch CKA (Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same
Things?", ICLR) averages the unbiased HSIC_1 over k minibatches of samples:
CKA_mb = mean_b HSIC_1(X_b, Y_b) / sqrt(mean_b HSIC_1(X_b, X_b) mean_b HSIC_1(Y_b, Y_b)),
for when neither d x d nor n x n fits, or the samples come from a data loader.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike

from repspace.errors import InputError
from repspace.metrics import _backend
from repspace.metrics._validate import as_matrix, check_layers, check_pair
from repspace.metrics.alignment import procrustes_from_nuclear
from repspace.metrics.hsic import center_gram, cka_from_hsic, feature_path_cheaper
from repspace.metrics.spectrum import effective_rank_from_spectrum

Side = Literal["x", "y"]
_EPS = np.finfo(np.float64).eps


class _Moments:
    """Finalisers shared by the two accumulators; subclasses provide the moments."""

    def __init__(self, n_x: int, n_y: int, device: _backend.Device,
                 names: tuple[Sequence[str], Sequence[str]] | None, precision: str) -> None:
        if n_x < 1 or n_y < 1:
            raise InputError("at least one X layer and one Y layer are needed.")
        self.precision = _backend.check_precision(precision)
        self.device = _backend.compute_device(device)
        self.names = {
            "x": list(names[0]) if names else [f"Xs[{i}]" for i in range(n_x)],
            "y": list(names[1]) if names else [f"Ys[{j}]" for j in range(n_y)],
        }
        self.n = 0
        self._spectra: dict[tuple[Side, int], np.ndarray] = {}  # emptied by every update

    # Provided by subclasses: traces tr(Xc^T Xc) and raw sums of squares per side, the
    # scaled HSIC values, eigenvalues of a centred covariance, and the nuclear norm of
    # one centred cross-covariance.
    def _traces(self, side: Side) -> tuple[np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _scaled_hsic(self, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        raise NotImplementedError

    def _eigenvalues(self, side: Side, index: int) -> tuple[np.ndarray, int]:
        raise NotImplementedError

    def _cross_nuclear(self, i: int, j: int) -> float:
        raise NotImplementedError

    def _check_samples(self, minimum: int, why: str = "") -> None:
        if self.n < minimum:
            raise InputError(f"at least {minimum} samples are needed{why}, got {self.n}.")

    def _checked_traces(self, side: Side, metric: str) -> np.ndarray:
        """tr(Xc^T Xc) per layer, raising if a layer is constant (as in ``_validate.centered``)."""
        traces, raw = self._traces(side)
        for name, t, r in zip(self.names[side], traces, raw, strict=True):
            if t <= (self.n * _EPS) ** 2 * r:
                raise InputError(
                    f"{name} is constant (zero variance after centering): {metric} is undefined."
                )
        return traces

    def hsic(self, debiased: bool = False) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """HSIC of every (X layer, Y layer) pair and of every layer with itself.

        Biased: HSIC_0 = ||Xc^T Yc||_F^2 / (n - 1)^2; debiased: HSIC_1 of Song et al. 2012
        (needs n >= 4). Returns (pairs (L_x, L_y), X self (L_x,), Y self (L_y,)).
        """
        self._check_samples(4 if debiased else 2, " for the debiased HSIC estimator"
                            if debiased else "")
        n = self.n
        scale = n * (n - 3) if debiased else (n - 1) ** 2
        return tuple(h / scale for h in self._scaled_hsic(debiased))  # type: ignore[return-value]

    def cka(self, debiased: bool = False) -> np.ndarray:
        """Linear CKA matrix (L_x, L_y), equal to :func:`repspace.metrics.cka_matrix`.

        CKA = HSIC(X, Y) / sqrt(HSIC(X, X) HSIC(Y, Y)) (Kornblith et al. 2019); 1 means
        identical up to rotation, isotropic scaling and translation; higher is more similar.
        """
        self._check_samples(4 if debiased else 2, " for the debiased HSIC estimator"
                            if debiased else "")
        tx = self._checked_traces("x", "CKA")
        ty = self._checked_traces("y", "CKA")
        hsic, hx, hy = self._scaled_hsic(debiased)
        # Scale as for unit-norm features, the scale _cka_from_hsic's zero check expects.
        return cka_from_hsic(hsic / np.outer(tx, ty), hx / tx**2, hy / ty**2,
                              self.names["x"], self.names["y"])

    def singular_values(self, side: Side, index: int) -> np.ndarray:
        """Singular values (descending, min(n, d) of them) of one centred layer.

        Equal to ``repspace.metrics.singular_values(X)``; values below ~1e-6 s_1 read as 0
        (see the module docstring).
        """
        self._check_samples(2)
        if (side, index) not in self._spectra:
            lam, length = self._eigenvalues(side, index)
            lam = np.sort(lam)[::-1]
            lam[lam <= max(self.n, length) * _EPS * max(lam[0], 0.0)] = 0.0
            out = np.zeros(min(self.n, length))
            k = min(out.size, lam.size)
            out[:k] = np.sqrt(lam[:k])
            self._spectra[side, index] = out
        return self._spectra[side, index].copy()

    def effective_rank(self, side: Side, index: int) -> float:
        """Effective rank (Roy & Vetterli 2007) of one centred layer; see
        :func:`repspace.metrics.effective_rank` (higher = more dimensions used)."""
        self._check_samples(2)
        self._checked_traces(side, "effective rank")
        return effective_rank_from_spectrum(self.singular_values(side, index))

    def procrustes(self, i: int, j: int,
                   metric: Literal["euclidean", "angular"] = "euclidean") -> float:
        """Orthogonal Procrustes distance between X layer i and Y layer j.

        As :func:`repspace.metrics.procrustes_distance`: with unit-norm centred features the
        distance is sqrt(2 - 2 ||Xn^T Yn||_*) (or arccos of the nuclear norm); 0 means
        identical up to rotation, isotropic scaling and translation; lower is more similar.
        """
        self._check_samples(2)
        tx = self._checked_traces("x", "the Procrustes distance")[i]
        ty = self._checked_traces("y", "the Procrustes distance")[j]
        return procrustes_from_nuclear(self._cross_nuclear(i, j) / np.sqrt(tx * ty), metric)


class CovarianceMoments(_Moments):
    """Moments of L_x + L_y layers accumulated over chunks of rows (the n >= d path).

    Parameters
    ----------
    dims_x, dims_y : sequence of int
        Feature dimension of each X layer and each Y layer.
    device : None, "auto" or a torch device
        Where the chunk products run (see :mod:`repspace.metrics._backend`).
    names : (X names, Y names), optional
        Layer names used in error messages.
    precision : {"float32", "float64"}
        ``"float32"`` (default): the X^T Y products of the centred rows run in float32 over
        blocks of rows and are summed in float64 (about 1e-7 from the float64 values in CKA);
        ``"float64"``: every product in float64, exact to rounding (see
        :mod:`repspace.metrics._backend`).

    Examples
    --------
    >>> acc = CovarianceMoments([768], [768])
    >>> for x_chunk, y_chunk in chunks:  # doctest: +SKIP
    ...     acc.update([x_chunk], [y_chunk])
    >>> acc.cka(debiased=True)  # doctest: +SKIP
    """

    def __init__(self, dims_x: Sequence[int], dims_y: Sequence[int], *,
                 device: _backend.Device = "auto",
                 names: tuple[Sequence[str], Sequence[str]] | None = None,
                 precision: _backend.Precision = "float32") -> None:
        super().__init__(len(dims_x), len(dims_y), device, names, precision)
        self.dims = {"x": [int(d) for d in dims_x], "y": [int(d) for d in dims_y]}
        dev, total = self.device, {s: sum(self.dims[s]) for s in ("x", "y")}
        n_layers = len(dims_x) + len(dims_y)
        self._shift: dict[Side, list[Any]] = {}
        self._sums = {s: _backend.zeros((total[s],), dev) for s in ("x", "y")}
        self._self = {s: [_backend.zeros((d, d), dev) for d in self.dims[s]] for s in ("x", "y")}
        self._cross = _backend.zeros((total["x"], total["y"]), dev)
        # Row norms w = [a_1 .. a_Lx, b_1 .. b_Ly] of every chunk: W^T W and X^T W, Y^T W.
        self._ww = _backend.zeros((n_layers, n_layers), dev)
        self._xw = {s: _backend.zeros((total[s], n_layers), dev) for s in ("x", "y")}
        self._host: dict[str, Any] | None = None

    def update(self, xs: Sequence[ArrayLike], ys: Sequence[ArrayLike], *,
               copy: bool = True) -> None:
        """Add one chunk: the same rows (samples) of every X layer and every Y layer. With
        ``copy=False``, float64 layers already on the device are shifted in place (they
        change) instead of being copied first."""
        raw = {"x": self._chunk(xs, "x", copy), "y": self._chunk(ys, "y", copy)}
        rows = {len(c) for side in raw.values() for c in side}
        if len(rows) != 1:
            raise InputError(f"every layer of a chunk must have the same rows, got {sorted(rows)}.")
        shift = self._shift or {s: [A.mean(0) for A in raw[s]] for s in raw}
        for s in raw:
            for A, c in zip(raw[s], shift[s], strict=True):
                A -= c  # in place: _chunk made copies, or the caller allowed it
        xp = _backend.namespace(self.device)
        w = xp.stack([xp.einsum("ij,ij->i", c, c) for s in ("x", "y") for c in raw[s]], 1)
        if not np.isfinite(float(_backend.to_numpy(w.sum()))):
            raise InputError("a chunk holds NaN or infinite values.")
        self._shift = shift
        precision = self.precision
        if precision == "float32" and not _backend.fits_float32(w):
            precision = "float64"
        for block in _backend.row_blocks(rows.pop()):
            self._add_block({s: [A[block] for A in raw[s]] for s in raw}, w[block], precision)
        self._spectra.clear()
        self._host = None

    def _add_block(self, shifted: dict[Side, list[Any]], w: Any, precision: str) -> None:
        """Add a block of shifted rows: their products, centred on the block's own means
        (in ``precision``, summed into float64), plus the float64 rank-one terms that restore
        the shifted moments, b d_x d_y^T for a block of b rows with means d."""
        b = w.shape[0]
        sums = {s: [A.sum(0) for A in shifted[s]] for s in shifted}
        means = {s: [t / b for t in sums[s]] for s in sums}
        cross = _backend.product_precision(precision, *(sum(self.dims[s]) for s in shifted))
        centred = {s: _backend.centred_stack(shifted[s], means[s], cross, self.device)
                   for s in shifted}
        with _backend.ieee_float32(self.device):
            self._cross += centred["x"].T @ centred["y"]
            for s in ("x", "y"):
                for k, (cols, d) in enumerate(zip(self._blocks(s), self.dims[s], strict=True)):
                    own = _backend.product_precision(precision, d, d)
                    Z = centred[s][:, cols] if own == cross else _backend.centred_stack(
                        [shifted[s][k]], [means[s][k]], own, self.device)
                    self._self[s][k] += Z.T @ Z
        del centred
        xp = _backend.namespace(self.device)
        mean = {s: xp.concatenate(means[s]) for s in means}
        _backend.add_outer(self._cross, mean["x"], mean["y"], b)
        for s in ("x", "y"):
            for k, cols in enumerate(self._blocks(s)):
                _backend.add_outer(self._self[s][k], mean[s][cols], mean[s][cols], b)
                self._sums[s][cols] += sums[s][k]
                self._xw[s][cols] += shifted[s][k].T @ w
        self._ww += w.T @ w
        self.n += b

    def _chunk(self, layers: Sequence[ArrayLike], side: Side, copy: bool) -> list[Any]:
        """The chunk's layers on the device, in float64 (copies with ``copy``), after checking
        their shapes."""
        dims = self.dims[side]
        if len(layers) != len(dims):
            raise InputError(f"expected {len(dims)} {side.upper()} layers, got {len(layers)}.")
        out = []
        for k, (L, d) in enumerate(zip(layers, dims, strict=True)):
            A = _backend.asarray(L, self.device, copy=copy)
            if A.ndim != 2 or A.shape[1] != d or A.shape[0] == 0:
                raise InputError(f"{self.names[side][k]}: chunk of shape {tuple(A.shape)}, "
                                 f"expected (rows > 0, {d}).")
            out.append(A)
        return out

    def _blocks(self, side: Side) -> list[slice]:
        starts = np.cumsum([0, *self.dims[side]])
        return [slice(a, b) for a, b in itertools.pairwise(starts)]

    def _numpy(self) -> dict[str, Any]:
        """The accumulated moments as numpy arrays, split per layer (copied off the device
        once after each update)."""
        if self._host is None:
            self._host = self._to_host()
        return self._host

    def _to_host(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ww": _backend.to_numpy(self._ww),
                               "cross": _backend.to_numpy(self._cross)}
        for s in ("x", "y"):
            sums, xw = _backend.to_numpy(self._sums[s]), _backend.to_numpy(self._xw[s])
            shift = [_backend.to_numpy(c) for c in self._shift[s]]
            out[s] = [
                {"sum": sums[b], "self": _backend.to_numpy(G), "xw": xw[b], "shift": c}
                for b, G, c in zip(self._blocks(s), self._self[s], shift, strict=True)
            ]
        return out

    def _traces(self, side: Side) -> tuple[np.ndarray, np.ndarray]:
        n, layers = self.n, self._numpy()[side]
        traces = np.array([np.trace(m["self"]) - m["sum"] @ m["sum"] / n for m in layers])
        raw = np.array([np.trace(m["self"]) + 2 * m["shift"] @ m["sum"]
                        + n * m["shift"] @ m["shift"] for m in layers])
        return traces, raw

    def _centred_self(self, m: dict[str, Any]) -> np.ndarray:
        return m["self"] - np.outer(m["sum"], m["sum"]) / self.n

    def _centred_cross(self, mom: dict[str, Any], i: int, j: int) -> np.ndarray:
        bi, bj = self._blocks("x")[i], self._blocks("y")[j]
        return mom["cross"][bi, bj] - np.outer(mom["x"][i]["sum"], mom["y"][j]["sum"]) / self.n

    def _scaled_hsic(self, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """HSIC times (n - 1)^2 (biased) or n (n - 3) (debiased); see the module docstring."""
        mom, n = self._numpy(), self.n
        lx, ly = len(self.dims["x"]), len(self.dims["y"])
        cx, cy = self._blocks("x"), self._blocks("y")
        scratch = np.empty(max(self.dims["x"] + self.dims["y"]) ** 2)
        pairs = np.array([[_centred_sum_squares(mom["cross"][cx[i], cy[j]], mom["x"][i]["sum"],
                                                mom["y"][j]["sum"], n, scratch)
                           for j in range(ly)] for i in range(lx)])
        selfs = {s: np.array([_centred_sum_squares(m["self"], m["sum"], m["sum"], n, scratch)
                              for m in mom[s]]) for s in ("x", "y")}
        if not debiased:
            return pairs, selfs["x"], selfs["y"]
        # Layer u of side s is column offset[s] + u of W (the row-norm matrix).
        offset = {"x": 0, "y": lx}

        def rdot(s: Side, u: int, t: Side, v: int, raw_cross: np.ndarray) -> float:
            mu, mv = mom[s][u], mom[t][v]
            au, av = offset[s] + u, offset[t] + v
            mean_u, mean_v = mu["sum"] / n, mv["sum"] / n
            m_u, m_v = mean_u @ mean_u, mean_v @ mean_v
            sum_a_u, sum_a_v = np.trace(mu["self"]), np.trace(mv["self"])
            return (mom["ww"][au, av] - 2 * mean_v @ mv["xw"][:, au]
                    - 2 * mean_u @ mu["xw"][:, av]
                    + 4 * np.einsum("i,ij,j->", mean_u, raw_cross, mean_v)
                    + m_v * sum_a_u + m_u * sum_a_v - 3 * n * m_u * m_v)

        def trace_c(m: dict[str, Any]) -> float:
            return np.trace(m["self"]) - m["sum"] @ m["sum"] / n

        def debias(h: float, r: float, tu: float, tv: float) -> float:
            return h - n / (n - 2) * r + tu * tv / ((n - 1) * (n - 2))

        out_pairs = np.empty((lx, ly))
        for i in range(lx):
            for j in range(ly):
                r = rdot("x", i, "y", j, mom["cross"][cx[i], cy[j]])
                out_pairs[i, j] = debias(pairs[i, j], r, trace_c(mom["x"][i]),
                                         trace_c(mom["y"][j]))
        out_self = {}
        for s in ("x", "y"):
            out_self[s] = np.array([
                debias(selfs[s][u], rdot(s, u, s, u, m["self"]), trace_c(m), trace_c(m))
                for u, m in enumerate(mom[s])])
        return out_pairs, out_self["x"], out_self["y"]

    def _eigenvalues(self, side: Side, index: int) -> tuple[np.ndarray, int]:
        m = self._numpy()[side][index]
        return np.linalg.eigvalsh(self._centred_self(m)), self.dims[side][index]

    def _cross_nuclear(self, i: int, j: int) -> float:
        C = self._centred_cross(self._numpy(), i, j)
        return float(np.linalg.svd(C, compute_uv=False).sum())


class GramMoments(_Moments):
    """Centred n x n Gram matrices of L_x + L_y layers, accumulated over column blocks
    (the n < d path).

    Parameters
    ----------
    n : int
        Number of samples; every block holds all n rows.
    n_x, n_y : int
        Number of X layers and of Y layers.
    device, names, precision
        As for :class:`CovarianceMoments`; with ``"float32"`` the Gram products of the centred
        block run in float32 over blocks of columns and are summed in float64.
    """

    def __init__(self, n: int, n_x: int, n_y: int, *, device: _backend.Device = "auto",
                 names: tuple[Sequence[str], Sequence[str]] | None = None,
                 precision: _backend.Precision = "float32") -> None:
        super().__init__(n_x, n_y, device, names, precision)
        self.n = int(n)
        self._gram = {s: [_backend.zeros((self.n, self.n), self.device) for _ in range(k)]
                      for s, k in (("x", n_x), ("y", n_y))}
        self._raw = {s: np.zeros(k) for s, k in (("x", n_x), ("y", n_y))}
        self._width = {s: np.zeros(k, dtype=np.int64) for s, k in (("x", n_x), ("y", n_y))}
        self._factors: dict[tuple[Side, int], np.ndarray] = {}

    def update(self, side: Side, index: int, block: ArrayLike) -> None:
        """Add a block of columns (all n rows) of layer ``index`` of side ``"x"`` or ``"y"``."""
        A = _backend.asarray(block, self.device)
        if A.ndim != 2 or A.shape[0] != self.n:
            raise InputError(f"{self.names[side][index]}: block of shape {tuple(A.shape)}, "
                             f"expected ({self.n}, columns).")
        raw = float(_backend.to_numpy((A * A).sum()))
        if not np.isfinite(raw):
            raise InputError(f"{self.names[side][index]} contains NaN or infinite values.")
        A = A - A.mean(0)
        precision = _backend.product_precision(self.precision, self.n, self.n)
        if precision == "float32" and not _backend.fits_float32((A * A).sum()):
            precision = "float64"
        zero = _backend.zeros((1,), self.device)
        with _backend.ieee_float32(self.device):
            for cols in _backend.row_blocks(A.shape[1]):
                Z = _backend.centred_stack([A[:, cols]], [zero], precision, self.device)
                self._gram[side][index] += Z @ Z.T
        self._raw[side][index] += raw
        self._width[side][index] += A.shape[1]
        self._factors.pop((side, index), None)
        self._spectra.pop((side, index), None)

    def _grams(self, side: Side) -> list[np.ndarray]:
        empty = np.flatnonzero(self._width[side] == 0)
        if empty.size:
            raise InputError(f"{self.names[side][empty[0]]} received no columns.")
        return [_backend.to_numpy(K) for K in self._gram[side]]

    def _traces(self, side: Side) -> tuple[np.ndarray, np.ndarray]:
        return np.array([np.trace(K) for K in self._grams(side)]), self._raw[side]

    def _scaled_hsic(self, debiased: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ex = np.stack([center_gram(K, debiased).ravel() for K in self._grams("x")])
        ey = np.stack([center_gram(K, debiased).ravel() for K in self._grams("y")])
        return ex @ ey.T, np.einsum("ij,ij->i", ex, ex), np.einsum("ij,ij->i", ey, ey)

    def _eigenvalues(self, side: Side, index: int) -> tuple[np.ndarray, int]:
        return np.linalg.eigvalsh(self._grams(side)[index]), int(self._width[side][index])

    def _factor(self, side: Side, index: int) -> np.ndarray:
        """F with F F^T = Kc: then Xc = F Q for a partial isometry Q, so that
        ||Xc^T Yc||_* = ||F_x^T F_y||_*."""
        if (side, index) not in self._factors:
            lam, V = np.linalg.eigh(self._grams(side)[index])
            self._factors[side, index] = V * np.sqrt(np.clip(lam, 0.0, None))
        return self._factors[side, index]

    def _cross_nuclear(self, i: int, j: int) -> float:
        C = self._factor("x", i).T @ self._factor("y", j)
        return float(np.linalg.svd(C, compute_uv=False).sum())


def _centred_sum_squares(M: np.ndarray, a: np.ndarray, b: np.ndarray, n: int,
                         scratch: np.ndarray) -> float:
    """||M - a b^T / n||_F^2, the centred matrix formed in ``scratch`` (no allocation, and
    no multithreaded BLAS call per block, which stalls on a busy machine)."""
    C = scratch[:M.size].reshape(M.shape)
    np.multiply.outer(a, b / n, out=C)
    np.subtract(M, C, out=C)
    return float(np.einsum("ij,ij->", C, C))


def moments_of(Xs: Sequence[np.ndarray], Ys: Sequence[np.ndarray], *,
               device: _backend.Device = "auto", precision: _backend.Precision = "float32",
               copy: bool = True) -> CovarianceMoments | GramMoments:
    """Moments of in-memory layers (validated float64 arrays sharing n rows), by the cheaper
    path: covariance products or Gram matrices (the cost model of ``cka_matrix``), with the
    products in ``precision`` (see :mod:`repspace.metrics._backend`). With ``copy=False`` the
    layers may be changed in place (for callers that own them)."""
    n = Xs[0].shape[0]
    if feature_path_cheaper(n, [M.shape[1] for M in Xs], [M.shape[1] for M in Ys]):
        acc: CovarianceMoments | GramMoments = CovarianceMoments(
            [M.shape[1] for M in Xs], [M.shape[1] for M in Ys], device=device,
            precision=precision)
        acc.update(Xs, Ys, copy=copy)
        return acc
    acc = GramMoments(n, len(Xs), len(Ys), device=device, precision=precision)
    for side, mats in (("x", Xs), ("y", Ys)):
        for k, M in enumerate(mats):
            acc.update(side, k, M)  # type: ignore[arg-type]
    return acc


def minibatch_cka_matrix(Xs: Sequence[ArrayLike], Ys: Sequence[ArrayLike], batch_size: int, *,
                         seed: int | None = None, device: _backend.Device = "auto",
                         precision: _backend.Precision = "float32") -> np.ndarray:
    """Minibatch linear CKA (Nguyen et al. 2021) between every X layer and every Y layer.

    The n samples are split into k = n // batch_size consecutive minibatches of near-equal size
    (batch_size to 2 batch_size - 1 rows; in a random order first if ``seed`` is given), and

        CKA_mb(X, Y) = sum_b HSIC_1(X_b, Y_b) / sqrt(sum_b HSIC_1(X_b, X_b) sum_b HSIC_1(Y_b, Y_b))

    with HSIC_1 the unbiased estimator of Song et al. 2012 on the linear kernel. It estimates
    the population CKA without bias from the batch size, unlike the mean of per-batch CKA
    values, and needs only one batch's features at a time.

    The implementations that follow the paper iterate a data loader instead (e.g.
    ``CKA_Minibatch`` of github.com/yueyang2000/CKA_minibatch_pytorch): batches of exactly
    ``batch_size`` rows and a last one of n mod batch_size, every batch's HSIC_1 weighted
    equally, so a small last batch adds a noisy term with full weight. Splitting into near-equal
    batches avoids it. Example: n = 1030, batch_size 256 (a loader's last batch holds 6 rows),
    two linear representations sharing a signal: 0.3947 here, 0.4151 with loader batches,
    0.3953 for debiased CKA on all samples at once.

    Reference: Nguyen, Raghu & Kornblith 2021, "Do Wide and Deep Networks Learn the Same
    Things? Uncovering How Neural Network Representations Vary with Width and Depth", ICLR.

    Parameters
    ----------
    Xs, Ys : sequence of array-like, each of shape (n, d_i)
        Layers of two models on the same n samples, in the same order.
    batch_size : int
        Samples per minibatch (>= 4, <= n).
    seed : int, optional
        Shuffle the samples with this seed before batching (batches should be random samples).
    device : None, "auto" or a torch device
        Where the per-batch products run.
    precision : {"float32", "float64"}
        ``"float32"`` (default): per-batch products of the centred rows in float32, summed in
        float64 (about 1e-7 from the float64 value); ``"float64"``: exact to rounding.

    Returns
    -------
    numpy.ndarray, shape (len(Xs), len(Ys))
        Near 1 for representations equal up to rotation, isotropic scaling and translation,
        near 0 (either sign) for unrelated ones; higher means more similar.
    """
    why = " for the debiased HSIC estimator"
    xs = check_layers(Xs, "Xs", min_rows=4, why=why)
    ys = check_layers(Ys, "Ys", min_rows=4, why=why)
    check_pair(xs[0], ys[0], "Xs[0]", "Ys[0]")
    n = xs[0].shape[0]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int | np.integer) or not (
            4 <= batch_size <= n):
        raise InputError(f"batch_size must be an integer in [4, n = {n}], got {batch_size!r}.")
    order = np.arange(n) if seed is None else np.random.default_rng(seed).permutation(n)
    totals = None
    for rows in np.array_split(order, n // batch_size):
        acc = moments_of([M[rows] for M in xs], [M[rows] for M in ys], device=device,
                         precision=precision, copy=False)  # the batches are copies
        batch = acc.hsic(debiased=True)
        totals = batch if totals is None else tuple(a + b for a, b in zip(totals, batch,
                                                                           strict=True))
    hsic, hx, hy = totals  # type: ignore[misc]
    tx = np.array([np.sum((M - M.mean(0)) ** 2) for M in xs])
    ty = np.array([np.sum((M - M.mean(0)) ** 2) for M in ys])
    return cka_from_hsic(hsic / np.outer(tx, ty) * n**2, hx / tx**2 * n**2, hy / ty**2 * n**2,
                          [f"Xs[{i}]" for i in range(len(xs))],
                          [f"Ys[{j}]" for j in range(len(ys))])


def minibatch_cka(X: ArrayLike, Y: ArrayLike, batch_size: int, *, seed: int | None = None,
                  device: _backend.Device = "auto",
                  precision: _backend.Precision = "float32") -> float:
    """Minibatch linear CKA of two representations; see :func:`minibatch_cka_matrix`.

    Parameters
    ----------
    X : array-like, shape (n, d_x)
    Y : array-like, shape (n, d_y)
        Rows are samples (same samples, same order).
    batch_size, seed, device, precision
        As for :func:`minibatch_cka_matrix`.

    Returns
    -------
    float
        Near 1 for representations equal up to rotation, isotropic scaling and translation;
        higher means more similar.
    """
    X = as_matrix(X, "X", min_rows=4, why=" for the debiased HSIC estimator")
    Y = as_matrix(Y, "Y", min_rows=4, why=" for the debiased HSIC estimator")
    return float(minibatch_cka_matrix([X], [Y], batch_size, seed=seed, device=device,
                                      precision=precision)[0, 0])

"""The result of :func:`repspace.analysis.streaming.stream_metrics`: metrics of two feature
stores computed in one streamed pass."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from repspace.results.base import Result
from repspace.results.tables import fixed_width, fmt
from repspace.utils.files import csv_text

#: Columns of :meth:`StreamResult.rows`, the table and the CSV.
ROW_COLUMNS = ("layer", "cka", "cka_debiased", "procrustes", "effective_rank_a",
               "effective_rank_b")


@dataclass
class StreamResult(Result):
    """Metrics of two stores computed by :func:`stream_metrics`.

    ``cka`` and ``cka_debiased`` are (layers, layers) linear CKA matrices (rows: store A's
    layers, columns: store B's; biased and unbiased HSIC). Per layer name: ``procrustes`` (the
    Euclidean orthogonal Procrustes distance between A and B), ``singular_values_a/_b`` (of the
    centred features) and ``effective_rank_a/_b``.
    """

    layers: list[str]
    n: int
    path: str
    cka: np.ndarray
    cka_debiased: np.ndarray
    procrustes: dict[str, float] = field(default_factory=dict)
    effective_rank_a: dict[str, float] = field(default_factory=dict)
    effective_rank_b: dict[str, float] = field(default_factory=dict)
    singular_values_a: dict[str, np.ndarray] = field(default_factory=dict)
    singular_values_b: dict[str, np.ndarray] = field(default_factory=dict)

    kind: ClassVar[str] = "repspace-stream-metrics"
    what: ClassVar[str] = "streamed metrics result"
    stem: ClassVar[str] = "stream_metrics"

    def _fields(self) -> dict[str, Any]:
        return {
            "layers": self.layers, "n": self.n, "path": self.path,
            "cka": self.cka.tolist(), "cka_debiased": self.cka_debiased.tolist(),
            "procrustes": self.procrustes,
            "effective_rank_a": self.effective_rank_a, "effective_rank_b": self.effective_rank_b,
            "singular_values_a": {k: v.tolist() for k, v in self.singular_values_a.items()},
            "singular_values_b": {k: v.tolist() for k, v in self.singular_values_b.items()},
        }

    @classmethod
    def _from_fields(cls, data: dict[str, Any], source: str) -> StreamResult:
        def arrays(values: dict[str, list[float]]) -> dict[str, np.ndarray]:
            return {k: np.asarray(v, dtype=np.float64) for k, v in values.items()}

        def matrix(values: list[list[float | None]]) -> np.ndarray:
            return np.array([[np.nan if x is None else x for x in row] for row in values],
                            dtype=np.float64)

        return cls(layers=data["layers"], n=data["n"], path=data["path"],
                   cka=matrix(data["cka"]), cka_debiased=matrix(data["cka_debiased"]),
                   procrustes=data["procrustes"], effective_rank_a=data["effective_rank_a"],
                   effective_rank_b=data["effective_rank_b"],
                   singular_values_a=arrays(data["singular_values_a"]),
                   singular_values_b=arrays(data["singular_values_b"]))

    def rows(self) -> list[dict[str, Any]]:
        """One dict per layer: CKA (biased, debiased) of A and B at that layer, Procrustes,
        effective ranks."""
        return [{"layer": name, "cka": float(self.cka[i, i]),
                 "cka_debiased": float(self.cka_debiased[i, i]),
                 "procrustes": self.procrustes[name],
                 "effective_rank_a": self.effective_rank_a[name],
                 "effective_rank_b": self.effective_rank_b[name]}
                for i, name in enumerate(self.layers)]

    def table(self) -> str:
        """:meth:`rows` as a plain-text table."""
        header = list(ROW_COLUMNS)
        return fixed_width(header, [[fmt(r[c]) for c in header] for r in self.rows()])

    def to_csv(self, path: str | Path | None = None) -> str:
        """:meth:`rows` as CSV; also written to ``path`` if given."""
        return csv_text(self.rows(), ROW_COLUMNS, path)

"""Result objects: the numbers of an analysis as tables, JSON, CSV and figures, all with one
protocol (:class:`~repspace.results.base.Result`: ``kind`` + ``version``, ``to_json`` /
``from_json``, ``table()``, ``save(dir)``)."""

from repspace.results.base import Result
from repspace.results.compare import COLUMNS, CompareResult
from repspace.results.stream import StreamResult
from repspace.results.weights import ModelInfo, WeightReport

__all__ = ["COLUMNS", "CompareResult", "ModelInfo", "Result", "StreamResult", "WeightReport"]

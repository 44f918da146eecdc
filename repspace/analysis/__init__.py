"""Analyses: feature stores -> metrics -> a result object.

:func:`~repspace.analysis.compare.compare` (tuned models against their base on a probe set, with
cached captures), :func:`~repspace.analysis.weights.weight_report` (weight-space changes, no
data) and :func:`~repspace.analysis.streaming.stream_metrics` (exact metrics of two stores of any
size, streamed)."""

"""Probe sets: the inputs features are captured on (text, JSONL, image + text), with stable
sample ids, and the shipped data files."""

from repspace.probes.probe import (
    DATA_DIR,
    DEFAULT_PROBE,
    IMAGE_PROBE,
    Probe,
    data_reference,
    display_path,
    iter_jsonl,
    load_probe,
    open_image,
    text_id,
)

__all__ = ["DATA_DIR", "DEFAULT_PROBE", "IMAGE_PROBE", "Probe", "data_reference", "display_path",
           "iter_jsonl", "load_probe", "open_image", "text_id"]

"""Forward hooks, layer resolution, token selection and pooling; writes feature stores."""

from repspace.capture.layers import PRESETS, resolve_layers
from repspace.capture.run import capture, resolve_device
from repspace.capture.tokens import POOLINGS

__all__ = ["POOLINGS", "PRESETS", "capture", "resolve_device", "resolve_layers"]

"""The installed repspace version."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("repspace")
except PackageNotFoundError:
    __version__ = "0.0.0+unknown"

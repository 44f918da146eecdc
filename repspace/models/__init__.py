"""Load, save and fingerprint models; apply tuned checkpoints onto their base."""

from repspace.models.api import export_checkpoint, load_model, save_tuned_checkpoint
from repspace.models.loaded import LoadedModel

__all__ = ["LoadedModel", "export_checkpoint", "load_model", "save_tuned_checkpoint"]

"""The studies behind ``repspace demo``: LoRA and adapters bend the pretrained space, prefix
tuning keeps it, PT-PEFT gets both, tested on a real encoder (MiniLM) and decoder (SmolLM2)."""

from repspace.demo.run import StudyResult, run_study
from repspace.demo.settings import PRESETS, STUDIES, Arm, StudySettings

__all__ = ["PRESETS", "STUDIES", "Arm", "StudyResult", "StudySettings", "run_study"]

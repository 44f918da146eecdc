"""The demo study: LoRA and adapters bend the pretrained space, prefix tuning keeps it, PT-PEFT
gets both (``repspace demo``)."""

from repspace.demo.run import DemoResult, run_demo
from repspace.demo.settings import ARMS, DemoSettings

__all__ = ["ARMS", "DemoResult", "DemoSettings", "run_demo"]

"""Library warnings a repspace user cannot act on, kept out of the terminal.

Only notices about the internals of transformers, PEFT and huggingface_hub are filtered, each by
its message; every other warning (one a user can act on) still shows. The CLI applies
:func:`quiet_libraries` at start; the test suite lists the same filters in ``pyproject.toml``.
"""

from __future__ import annotations

import warnings

#: (category, message regex) of each filtered warning, and why a user cannot act on it.
FILTERS: tuple[tuple[type[Warning], str], ...] = (
    # PEFT's prefix tuning passes transformers' renamed private keyword (removed in 5.40)
    (FutureWarning, "`past_key_values` is deprecated"),
    # PEFT asks a transformers attribute that is deprecated
    (FutureWarning, ".*is_gradient_checkpointing"),
    # transformers' deprecation notices about its own internals
    (FutureWarning, ".*(deprecated|will be removed).*"),
    # BERT-like tokenizers returning token type ids a model does not take
    (UserWarning, "Token type ids are not supported"),
    # PEFT reads an AdaLoRA matrix pruned to rank 0 as an unsharded ZeRO-3 / FSDP tensor
    (UserWarning, ".*have invalid shape.*ZeRO-3"),
    # PEFT's BOFT tries to build its CUDA extension and falls back to one butterfly factor
    # (repspace refuses more than one factor without it)
    (UserWarning, "Failed to load the CUDA extension"),
    (UserWarning, "Setting boft_n_butterfly_factor to 1"),
    # PEFT looks for a hub config beside a model read from a GGUF file, to decide whether the
    # vocabulary changed (it did not: repspace never resizes embeddings)
    (UserWarning, "Could not find a config file in"),
)


def quiet_libraries() -> None:
    """Filter :data:`FILTERS` and lower the log level of transformers and huggingface_hub to
    errors (their info and warning logs describe library internals)."""
    for category, message in FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
    from huggingface_hub.utils import logging as hub_logging
    from transformers.utils import logging

    logging.set_verbosity_error()
    logging.disable_progress_bar()
    hub_logging.set_verbosity_error()

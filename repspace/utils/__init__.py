"""Helpers every stage shares, one module per job: atomic files and JSON/CSV text
(:mod:`~repspace.utils.files`), the device resolver (:mod:`~repspace.utils.device`), the torchrun
world (:mod:`~repspace.utils.distributed`), declared options (:mod:`~repspace.utils.options`),
memory budgets and sizes such as ``2GB`` (:mod:`~repspace.utils.memory`) and the filter of
library warnings a user cannot act on (:mod:`~repspace.utils.quiet`). Nothing here imports
another stage of repspace."""

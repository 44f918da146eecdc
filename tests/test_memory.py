"""Memory budgets: sizes as written on the command line, and the default budget."""

from __future__ import annotations

import pytest

from repspace.errors import InputError
from repspace.utils.memory import default_memory_budget, memory_budget, parse_size, physical_memory


def test_sizes_parse_in_decimal_and_binary_units() -> None:
    assert parse_size("2GB") == 2 * 10**9
    assert parse_size(" 512 mb ") == 512 * 10**6
    assert parse_size("1.5GiB") == 3 * 2**29
    assert parse_size("64k") == 64_000
    assert parse_size(4096) == parse_size("4096") == 4096
    assert memory_budget("1MB") == 10**6


@pytest.mark.parametrize("bad", ["lots", "2 GBs", "-1GB", "0", "", True, 0.5, "1e9"])
def test_a_size_that_is_not_one_is_an_input_error(bad) -> None:
    with pytest.raises(InputError, match="memory budget must be"):
        parse_size(bad)


def test_the_default_budget_is_half_the_physical_memory() -> None:
    total = physical_memory()
    assert total is None or total > 10**8
    assert default_memory_budget() == (total // 2 if total else 4 * 10**9)
    assert memory_budget(None) == default_memory_budget()

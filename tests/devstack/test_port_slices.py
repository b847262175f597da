"""Free ports: each pytest-xdist worker picks from its own slice, so two workers never pick
the same port in the moment between choosing it and binding it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from devstack import processes
from devstack.processes import free_port, use_port_slice


@pytest.fixture
def restore_slice() -> Iterator[None]:
    before = list(processes._SLICE)
    yield
    use_port_slice(*before)


def spans_of(index: int, count: int) -> list[tuple[int, int]]:
    use_port_slice(index, count)
    return processes._slice([(1025, 32767), (61000, 65535)])


def test_slices_are_disjoint_and_ports_stay_in_their_slice(restore_slice: None) -> None:
    slices = [spans_of(index, 3) for index in range(3)]
    for first in range(3):
        for second in range(first + 1, 3):
            for (a_start, a_end), (b_start, b_end) in zip(
                slices[first], slices[second], strict=True
            ):
                assert a_end < b_start or b_end < a_start
    use_port_slice(2, 3)
    mine = processes._slice([(1025, 32767), (61000, 65535)])
    for _ in range(20):
        port = free_port()
        assert any(start <= port <= end for start, end in mine), port


@pytest.mark.parametrize(("index", "count"), [(0, 0), (3, 3), (-1, 2)])
def test_a_slice_that_does_not_exist_is_refused(
    restore_slice: None, index: int, count: int
) -> None:
    with pytest.raises(ValueError, match=f"slice {index} of {count} does not exist"):
        use_port_slice(index, count)

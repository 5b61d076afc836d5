from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from s3_multipart_upload.errors import BadInput
from s3_multipart_upload.plan import (
    DEFAULT_PART_SIZE,
    MAX_OBJECT_SIZE,
    MAX_PART_SIZE,
    MAX_PARTS,
    MIN_PART_SIZE,
    GiB,
    MiB,
    TiB,
    check_equal_parts,
    choose_part_size,
    plan_chunks,
    plan_file,
)

sizes = st.integers(min_value=0, max_value=MAX_OBJECT_SIZE)
requested = st.one_of(st.none(), st.integers(min_value=MIN_PART_SIZE, max_value=MAX_PART_SIZE))


@given(sizes, requested)
def test_parts_cover_the_file_exactly_within_s3_limits(total: int, req: int | None) -> None:
    part_size, _ = choose_part_size(total, req)
    plan = plan_file(total, part_size)
    assert 1 <= len(plan.parts) <= MAX_PARTS
    assert [p.number for p in plan.parts] == list(range(1, len(plan.parts) + 1))
    offset = 0
    for p in plan.parts:
        assert p.offset == offset
        offset += p.length
    assert offset == total
    for p in plan.parts[:-1]:
        assert MIN_PART_SIZE <= p.length <= MAX_PART_SIZE
    assert plan.parts[-1].length <= MAX_PART_SIZE


@given(sizes, requested)
def test_a_files_parts_are_equal_but_the_last_which_is_no_larger(total: int, req: int | None) -> None:
    """--equal-parts (R2) holds for every file plan: nothing to change for -f."""
    check_equal_parts(plan_file(total, choose_part_size(total, req)[0]))


@pytest.mark.parametrize("chunks", [[6, 5, 6], [6, 6, 7], [5, 6, 6, 1]])
def test_unequal_chunks_are_refused_under_equal_parts(chunks: list[int]) -> None:
    plan = plan_chunks([n * MiB for n in chunks])
    with pytest.raises(BadInput, match="--equal-parts: every chunk but the last"):
        check_equal_parts(plan, [f"c{i}" for i in range(len(chunks))])
    check_equal_parts(plan_chunks([6 * MiB, 6 * MiB, 6 * MiB, 1]))


@given(sizes, requested)
def test_part_size_is_only_ever_raised_and_says_why(total: int, req: int | None) -> None:
    part_size, note = choose_part_size(total, req)
    asked = DEFAULT_PART_SIZE if req is None else req
    assert part_size >= asked
    assert (note is None) == (part_size == asked)


def test_5_tib_file_is_raised_to_a_whole_mib_that_fits_10000_parts() -> None:
    part_size, note = choose_part_size(5 * TiB, 8 * MiB)
    assert part_size == 525 * MiB  # ceil(5 TiB / 10,000) rounded up to MiB
    assert len(plan_file(5 * TiB, part_size).parts) == 9987  # 5 TiB / 525 MiB = 9986.4
    assert note is not None and "10,000" in note


def test_largest_object_is_10000_parts_of_5_gib() -> None:
    part_size, _ = choose_part_size(MAX_OBJECT_SIZE, None)
    assert part_size == 5 * GiB
    assert len(plan_file(MAX_OBJECT_SIZE, part_size).parts) == MAX_PARTS
    with pytest.raises(BadInput, match="larger than"):
        choose_part_size(MAX_OBJECT_SIZE + 1, None)


def test_split_below_5_mib_is_refused_when_the_file_needs_several_parts() -> None:
    with pytest.raises(BadInput, match="below S3's minimum part size of 5 MiB") as exc:
        choose_part_size(20 * MiB, 5_000_000)  # the historical default
    assert exc.value.hint is not None and "-s 5242880" in exc.value.hint


def test_split_below_5_mib_is_fine_for_a_file_of_one_part() -> None:
    assert choose_part_size(1000, 5_000_000) == (5_000_000, None)


def test_split_above_5_gib_is_refused() -> None:
    with pytest.raises(BadInput, match="above S3's maximum part size"):
        choose_part_size(10 * GiB, 5 * GiB + 1)


@pytest.mark.parametrize("bad", [0, -1])
def test_split_must_be_positive(bad: int) -> None:
    with pytest.raises(BadInput, match="positive"):
        choose_part_size(10, bad)


def test_empty_file_is_one_empty_part() -> None:
    plan = plan_file(0, DEFAULT_PART_SIZE)
    assert [(p.number, p.offset, p.length) for p in plan.parts] == [(1, 0, 0)]


def test_chunks_map_one_file_to_one_part_in_order() -> None:
    plan = plan_chunks([6 * MiB, 5 * MiB, 3])
    assert [(p.number, p.offset, p.length) for p in plan.parts] == [(1, 0, 6 * MiB), (2, 6 * MiB, 5 * MiB),
                                                                    (3, 11 * MiB, 3)]
    assert plan.total_size == 11 * MiB + 3


def test_a_small_chunk_that_is_not_the_last_is_refused_by_name() -> None:
    with pytest.raises(BadInput, match=r"x01 is 100 bytes.*not the last"):
        plan_chunks([6 * MiB, 100, 6 * MiB], ["x00", "x01", "x02"])

"""The streaming data path and the checksums it computes, against published check values and hashlib."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import anycrc
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from s3_multipart_upload import checksums
from s3_multipart_upload.errors import StateConflict
from s3_multipart_upload.plan import MiB, Part
from s3_multipart_upload.sources import FileSource
from s3_multipart_upload.stream import BLOCK, PartStream, digest_part
from tests.conftest import write_random


def b64(n: int, width: int) -> str:
    return base64.b64encode(n.to_bytes(width, "big")).decode()


@pytest.mark.parametrize(("algorithm", "check"), [
    # The CRC catalogue's check values: the CRC of the ASCII bytes "123456789".
    ("CRC64NVME", b64(0xAE8B14860A799888, 8)),
    ("CRC32C", b64(0xE3069283, 4)),
    ("CRC32", b64(0xCBF43926, 4)),
    ("MD5", base64.b64encode(hashlib.md5(b"123456789").digest()).decode()),
    ("SHA256", base64.b64encode(hashlib.sha256(b"123456789").digest()).decode()),
])
def test_checksums_match_the_published_check_values(algorithm: str, check: str) -> None:
    assert checksums.compute(algorithm, b"123456789").value == check


@settings(max_examples=40, deadline=None)
@given(st.lists(st.binary(max_size=3000), min_size=1, max_size=6))
def test_a_full_object_crc64nvme_combined_from_parts_is_the_crc_of_the_whole(pieces: list[bytes]) -> None:
    parts = [(checksums.compute("CRC64NVME", p).value, len(p)) for p in pieces]
    whole = b"".join(pieces)
    expected = b64(int(anycrc.Model("CRC64-NVME").calc(whole)), 8)  # an implementation other than awscrt
    assert checksums.full_object_checksum("CRC64NVME", parts) == expected


def test_the_composite_checksum_is_the_checksum_of_the_part_digests() -> None:
    a, b = checksums.compute("CRC32C", b"a" * 10), checksums.compute("CRC32C", b"b" * 7)
    joined = base64.b64decode(a.value) + base64.b64decode(b.value)
    assert checksums.composite_checksum("CRC32C", [a.value, b.value]) == \
        f"{checksums.compute('CRC32C', joined).value}-2"
    assert checksums.composite_checksum("CRC64NVME", [a.value]) is None  # full-object only


@pytest.mark.parametrize(("asked", "endpoint", "controller", "chosen", "probe"), [
    ("auto", None, False, "CRC64NVME", False),
    ("auto", "https://s3.eu-west-1.amazonaws.com", False, "CRC64NVME", False),
    ("auto", "http://127.0.0.1:9000", False, "MD5", True),  # a multipart upload asks the store first
    ("auto", "https://minio.example.org", False, "MD5", True),
    ("auto", "https://notamazonaws.com.example", False, "MD5", True),
    ("auto", None, True, "MD5", False),
    ("crc32c", "http://127.0.0.1:9000", False, "CRC32C", False),
])
def test_auto_picks_what_the_store_verifies(asked: str, endpoint: str | None, controller: bool, chosen: str,
                                            probe: bool) -> None:
    algorithm, why, probes = checksums.choose(asked, endpoint, controller)
    assert (algorithm, probes) == (chosen, probe)
    assert why.startswith("auto" if asked == "auto" else "as asked")


def test_the_probe_value_is_a_wrong_crc64nvme_for_the_empty_body_it_goes_with() -> None:
    assert checksums.probe_value() != checksums.compute("CRC64NVME", b"").value
    assert len(base64.b64decode(checksums.probe_value())) == 8


@pytest.mark.parametrize("length", [0, 1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 12345])
def test_a_part_stream_hands_out_exactly_the_part_and_hashes_it(tmp_path: Path, length: int) -> None:
    f = write_random(tmp_path / "f", length + 777, seed=length)
    data = f.read_bytes()
    part = Part(2, 777, length)
    stream = PartStream(FileSource(f), part, "MD5")
    got = bytearray()
    for _ in range(length // 16384 + 3):  # the way http.client reads a body: 16 KiB at a time
        chunk = stream.read(16384)
        if not chunk:
            break
        got += chunk
    assert bytes(got) == data[777:777 + length]
    digest = stream.digest()
    assert digest is not None and digest.md5_hex == hashlib.md5(data[777:]).hexdigest()
    assert len(stream) == length


def test_a_rewound_stream_hashes_again_from_the_start(tmp_path: Path) -> None:
    f = write_random(tmp_path / "f", 2 * BLOCK + 5)
    stream = PartStream(FileSource(f), Part(1, 0, 2 * BLOCK + 5), "CRC64NVME")
    stream.read(BLOCK + 10)
    assert stream.digest() is None  # not read whole
    assert stream.seek(0) == 0
    whole = stream.read()
    assert whole == f.read_bytes()
    assert stream.digest() == checksums.compute("CRC64NVME", f.read_bytes())
    with pytest.raises(OSError, match="rewound to its start"):
        stream.seek(100)


def test_views_handed_out_stay_valid_after_later_reads(tmp_path: Path) -> None:
    """A consumer may keep what it was handed (a fake that collects a body): later blocks must not overwrite it."""
    f = write_random(tmp_path / "f", 3 * BLOCK)
    stream = PartStream(FileSource(f), Part(1, 0, 3 * BLOCK))
    kept = [stream.read(BLOCK) for _ in range(3)]
    assert b"".join(bytes(k) for k in kept) == f.read_bytes()


def test_digest_part_reads_in_blocks_and_matches_hashlib(tmp_path: Path) -> None:
    f = write_random(tmp_path / "f", 5 * MiB + 3)
    part = Part(1, 0, 5 * MiB + 3)
    assert digest_part(FileSource(f), part, "SHA256").value == \
        base64.b64encode(hashlib.sha256(f.read_bytes()).digest()).decode()


def test_a_file_that_shrank_under_the_stream_is_a_state_conflict(tmp_path: Path) -> None:
    f = write_random(tmp_path / "f", 2 * BLOCK)
    source = FileSource(f)
    os.truncate(f, BLOCK)
    stream = PartStream(source, Part(1, 0, 2 * BLOCK))
    with pytest.raises(StateConflict, match="shorter than when the upload was planned"):
        for _ in range(4):
            stream.read(BLOCK)

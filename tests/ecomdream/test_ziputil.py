"""Tests for ecomdream.ziputil: exact part sizes, valid archives, bounded buffering, determinism."""

from __future__ import annotations

import io
import random
import shutil
import subprocess
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest
from PIL import Image

from ecomdream.imaging import normalise_image
from ecomdream.ziputil import DEFAULT_PART_SIZE, StreamingZip

PART = 64 * 1024


def photo(seed: int, size: tuple[int, int] = (1400, 1000)) -> bytes:
    """A noisy JPEG 'upload' (noise keeps the normalised JPEG large enough to span parts)."""
    rng = random.Random(seed)
    im = Image.frombytes("RGB", size, rng.randbytes(size[0] * size[1] * 3))
    out = io.BytesIO()
    im.save(out, format="JPEG", quality=90)
    return out.getvalue()


@pytest.fixture(scope="module")
def entries() -> list[tuple[str, bytes]]:
    """Twelve normalised photos named the way the training ZIP names them."""
    return [(f"{i:02d}.jpg", normalise_image(photo(i), max_side=512)) for i in range(12)]


def zip_parts(
    entries: Sequence[tuple[str, bytes]], part_size: int, compression: int = zipfile.ZIP_DEFLATED
) -> list[bytes]:
    """Every part of an archive of entries, in the order the training zip's upload sends them."""
    archive = StreamingZip(part_size, compression=compression)
    parts = [part for name, content in entries for part in archive.add(name, content)]
    return parts + archive.close()


def check_parts(parts: list[bytes], part_size: int) -> None:
    """Every part but the last is exactly part_size; the last is non-empty and not larger."""
    assert parts
    assert all(len(p) == part_size for p in parts[:-1])
    assert 0 < len(parts[-1]) <= part_size


def check_archive(data: bytes, entries: list[tuple[str, bytes]]) -> zipfile.ZipFile:
    """The archive opens, passes CRC checks and holds exactly the given entries in order."""
    archive = zipfile.ZipFile(io.BytesIO(data))
    assert archive.testzip() is None
    assert archive.namelist() == [name for name, _ in entries]
    for name, content in entries:
        assert archive.read(name) == content
    return archive


def test_parts_are_exact_and_make_a_valid_archive(entries: list[tuple[str, bytes]]) -> None:
    parts = zip_parts(entries, PART)
    total = sum(len(content) for _, content in entries)
    assert total > 4 * PART  # the test really spans many parts
    check_parts(parts, PART)
    archive = check_archive(b"".join(parts), entries)
    for info in archive.infolist():
        assert info.flag_bits & 0x08  # streamed: CRC and sizes in a data descriptor
        assert info.compress_type == zipfile.ZIP_DEFLATED
        assert info.date_time == (1980, 1, 1, 0, 0, 0)


def test_stored_archive_is_valid_too(entries: list[tuple[str, bytes]]) -> None:
    parts = zip_parts(entries, PART, compression=zipfile.ZIP_STORED)
    check_parts(parts, PART)
    archive = check_archive(b"".join(parts), entries)
    assert {info.compress_type for info in archive.infolist()} == {zipfile.ZIP_STORED}


def test_bytes_written_counts_every_part_and_close_is_idempotent(entries: list[tuple[str, bytes]]) -> None:
    archive = StreamingZip(PART)
    parts: list[bytes] = []
    for name, content in entries:
        parts.extend(archive.add(name, content))
    parts.extend(archive.close())
    check_parts(parts, PART)
    assert archive.bytes_written == sum(map(len, parts))
    assert archive.close() == []


def test_add_returns_parts_as_soon_as_they_are_complete() -> None:
    archive = StreamingZip(1000)
    assert archive.add("small.txt", b"x" * 10) == []
    big = random.Random(0).randbytes(5500)
    parts = archive.add("big.bin", big)
    assert [len(p) for p in parts] == [1000] * 5
    tail = archive.close()
    check_parts(parts + tail, 1000)
    check_archive(b"".join(parts + tail), [("small.txt", b"x" * 10), ("big.bin", big)])


def test_archive_is_deterministic_and_exact_multiple_has_no_empty_part(
    entries: list[tuple[str, bytes]],
) -> None:
    whole = b"".join(zip_parts(entries[:3], DEFAULT_PART_SIZE))
    assert b"".join(zip_parts(entries[:3], PART)) == whole
    # A part size that divides the archive exactly: no trailing empty part (S3 would reject it).
    assert zip_parts(entries[:3], len(whole)) == [whole]


def test_empty_archive_is_one_short_part() -> None:
    parts = zip_parts([], PART)
    assert len(parts) == 1
    assert zipfile.ZipFile(io.BytesIO(parts[0])).namelist() == []


def test_buffer_holds_at_most_one_partial_part() -> None:
    blob = random.Random(1).randbytes(300_000)
    archive = StreamingZip(PART, compression=zipfile.ZIP_STORED)
    handed_out = 0
    for i in range(10):
        handed_out += sum(map(len, archive.add(f"{i}.bin", blob)))
        # Everything not yet handed out is less than one part, however much went in.
        assert 0 <= archive.bytes_written - handed_out < PART
    handed_out += sum(map(len, archive.close()))
    assert handed_out == archive.bytes_written


def test_rejects_bad_use() -> None:
    with pytest.raises(ValueError, match="part_size"):
        StreamingZip(0)
    archive = StreamingZip(PART)
    archive.add("a.jpg", b"1")
    with pytest.raises(ValueError, match="duplicate"):
        archive.add("a.jpg", b"2")
    archive.close()
    with pytest.raises(ValueError, match="closed"):
        archive.add("b.jpg", b"3")


@pytest.mark.skipif(shutil.which("unzip") is None, reason="Info-ZIP unzip not installed")
def test_info_zip_accepts_the_archive(entries: list[tuple[str, bytes]], tmp_path: Path) -> None:
    path = tmp_path / "training.zip"
    path.write_bytes(b"".join(zip_parts(entries, PART)))
    result = subprocess.run(["unzip", "-t", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "No errors detected" in result.stdout

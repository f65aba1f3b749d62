"""Benchmark upload validation: a plain single-threaded full decode vs the worker's `check_photos` activity.

Run from the repo root: ``python bench/validate_images.py [--photos N]``. Photos are generated once into a
cache directory under the system temp dir and reused by later runs. The activity runs as the worker wires
it (Pillow pool, concurrency) against an S3 of its own on a free port, so its figure includes fetching every
photo from S3; the baselines read the same photos from local files.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path

from PIL import Image

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets `python bench/validate_images.py` run without the package being installed.
    sys.path.insert(0, str(REPO_ROOT))

from _photos import PHOTO_SIZE, ensure_photos, s3_server, stage, worker_images  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from ecomdream.contracts.training import PhotoCheck  # noqa: E402
from ecomdream.imaging import check_image  # noqa: E402


def report(label: str, count: int, elapsed: float) -> float:
    """Print and return one wall time."""
    print(f"{label:<62} {elapsed:7.2f} s   {count / elapsed:6.1f} photos/s", flush=True)
    return elapsed


def full_decode(paths: Sequence[Path]) -> None:
    """Baseline: what a naive validator does, a full decode of each photo on one thread."""
    for path in paths:
        with Image.open(path) as im:
            im.load()


def draft_checks(paths: Sequence[Path]) -> None:
    """Our checks (draft decode) on one thread, without S3: what the pool parallelises."""
    for path in paths:
        check_image(path.name, path)


def timed(run: Callable[[], object]) -> float:
    """Wall time of one call of run."""
    started = time.perf_counter()
    run()
    return time.perf_counter() - started


async def check_photos(endpoint_url: str, paths: Sequence[Path]) -> tuple[float, int]:
    """Stage the photos in S3, then time the worker's check_photos activity on them."""
    async with AsyncExitStack() as stack:
        images = await worker_images(endpoint_url, stack)
        check = PhotoCheck(photos=await stage(images.storage, paths))
        started = time.perf_counter()
        result = await ActivityEnvironment().run(images.check_photos, check)
        elapsed = time.perf_counter() - started
        await images.storage.delete_prefix("staging/")
    return elapsed, len(result.problems)


def main() -> None:
    """Parse flags, prepare photos, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=30, help="number of photos (default 30)")
    args = parser.parse_args()
    count: int = args.photos

    paths = ensure_photos(count)
    sizes = [p.stat().st_size for p in paths]
    print(
        f"{count} photos, {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, "
        f"{min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} MB each ({sum(sizes) / 1e6:.0f} MB total), "
        f"{os.cpu_count()} CPUs"
    )
    # Warm the page cache so the baselines measure decoding, not the first disk read.
    for path in paths:
        path.read_bytes()

    baseline = report(
        "(a) full decode, Image.open().load(), 1 thread", count, timed(lambda: full_decode(paths))
    )
    sequential = report("(c) check_image (draft decode), 1 thread", count, timed(lambda: draft_checks(paths)))
    with s3_server() as endpoint_url:
        elapsed, problems = asyncio.run(check_photos(endpoint_url, paths))
    activity = report("(b) check_photos activity, photos fetched from S3", count, elapsed)
    print(f"problems reported: {problems} (expected 0)")
    print(
        f"speed-up (b) vs (a): {baseline / activity:.1f}x   [draft alone (c) vs (a): {baseline / sequential:.1f}x]"
    )


if __name__ == "__main__":
    main()

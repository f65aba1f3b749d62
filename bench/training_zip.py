"""Benchmark the worker's `build_training_zip` activity: peak memory above baseline stays flat as the photo
count grows; wall time and CPU time of the whole zip (CPU above wall time: the photos used several cores).

Run from the repo root: ``python bench/training_zip.py [--counts 10 20 30]``. The ~8 MB 12 MP photos (shared
cache with bench/validate_images.py) are staged once in an S3 of the bench's own (SeaweedFS on a free port,
another process); each count then runs in a fresh child process, so allocator caches from one run cannot
flatter the next. The child wires the photo activities as the worker does and runs the activity, which
fetches, normalises, zips and uploads the parts by multipart upload. Peak RSS of the child comes from
``getrusage`` (exact high-water mark) and a 2 ms ``/proc/self/statm`` sampler (cross-check); Linux only.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import io
import json
import math
import os
import resource
import subprocess
import sys
import threading
import time
import uuid
import zipfile
from contextlib import AsyncExitStack
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets `python bench/training_zip.py` run without the package being installed.
    sys.path.insert(0, str(REPO_ROOT))

from _photos import ensure_photos, s3_server, stage, staged, worker_images  # noqa: E402
from temporalio.testing import ActivityEnvironment  # noqa: E402

from ecomdream.contracts.training import ZipRequest  # noqa: E402
from ecomdream.imaging import normalise_image  # noqa: E402
from ecomdream.ziputil import DEFAULT_PART_SIZE  # noqa: E402

MB = 1_000_000
PAGE_SIZE = os.sysconf("SC_PAGE_SIZE")


def current_rss() -> int:
    """Resident set size of this process in bytes."""
    with open("/proc/self/statm", "rb") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


class PeakSampler:
    """Polls the process RSS in a background thread and keeps the maximum."""

    def __init__(self, interval: float = 0.002) -> None:
        self._interval = interval
        self._stop = threading.Event()
        self.peak = current_rss()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, current_rss())
            self._stop.wait(self._interval)

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, current_rss())


async def child(count: int, endpoint_url: str) -> dict[str, float]:
    """Zip the first ``count`` staged photos with the activity and return the memory and time figures."""
    paths = ensure_photos(count)
    async with AsyncExitStack() as stack:
        images = await worker_images(endpoint_url, stack)
        request = ZipRequest(version_id=uuid.uuid4(), photos=staged(paths))
        # Touch the decoder, the encoder and the S3 connection once, so their one-off allocations count as
        # baseline, not growth.
        normalise_image(paths[0])
        await images.storage.exists(request.photos[0].key)
        gc.collect()
        baseline = current_rss()
        started, cpu_started = time.perf_counter(), time.process_time()
        with PeakSampler() as sampler:
            result = await ActivityEnvironment().run(images.build_training_zip, request)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu_started
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        archive = await images.storage.get(result.key)
        await images.storage.delete_prefix(result.key)
    with zipfile.ZipFile(io.BytesIO(archive)) as zipped:
        if zipped.testzip() is not None or zipped.namelist() != [f"{i:02d}.jpg" for i in range(count)]:
            raise SystemExit("archive verification failed")
    return {
        "count": count,
        "baseline_mb": baseline / MB,
        "peak_above_mb": (max(max_rss, sampler.peak) - baseline) / MB,
        "sampled_above_mb": (sampler.peak - baseline) / MB,
        "seconds": elapsed,
        "cpu_seconds": cpu,
        "zip_mb": result.size / MB,
        "parts": math.ceil(result.size / DEFAULT_PART_SIZE),
        "input_mb": sum(p.stat().st_size for p in paths) / MB,
    }


async def stage_photos(endpoint_url: str, count: int) -> None:
    """Upload the photos once, for every child to read."""
    async with AsyncExitStack() as stack:
        images = await worker_images(endpoint_url, stack)
        await stage(images.storage, ensure_photos(count))


def main() -> None:
    """Stage the photos, run each count in a child process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[10, 20, 30], help="photo counts (default 10 20 30)"
    )
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child is not None:
        print(json.dumps(asyncio.run(child(args.child, args.endpoint))))
        return

    with s3_server() as endpoint_url:
        asyncio.run(stage_photos(endpoint_url, max(args.counts)))
        print(
            f"{os.cpu_count()} CPUs; build_training_zip as the worker runs it: fetch from S3, normalise to "
            "1024 px JPEG q90, zip, multipart upload"
        )
        print(
            f"{'photos':>6} {'input MB':>9} {'zip MB':>7} {'parts':>5} {'time s':>7} {'CPU s':>6} {'baseline MB':>12} "
            f"{'peak above baseline MB':>23}"
        )
        for count in args.counts:
            result = subprocess.run(
                [sys.executable, __file__, "--child", str(count), "--endpoint", endpoint_url],
                check=True,
                capture_output=True,
                text=True,
            )
            r = json.loads(result.stdout.strip().splitlines()[-1])
            print(
                f"{r['count']:>6} {r['input_mb']:>9.0f} {r['zip_mb']:>7.1f} {r['parts']:>5} {r['seconds']:>7.2f} {r['cpu_seconds']:>6.2f} "
                f"{r['baseline_mb']:>12.0f} {r['peak_above_mb']:>14.1f} (sampled {r['sampled_above_mb']:.1f})",
                flush=True,
            )


if __name__ == "__main__":
    main()

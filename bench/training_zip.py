"""Benchmark the training ZIP build: peak memory above baseline stays flat as the photo count grows.

Run from the repo root: ``python bench/training_zip.py [--counts 10 20 30] [--part-mib 8]``.
Each count runs in a fresh child process, so allocator caches from one run cannot flatter the next.
The child normalises ~8 MB 12 MP photos (shared cache with bench/validate_images.py) straight into
``iter_zip_parts`` and writes each 8 MiB part to a temp file, as an S3 ``upload_part`` loop would.
Peak RSS comes from ``getrusage`` (exact high-water mark) and a 2 ms ``/proc/self/statm`` sampler
(cross-check); Linux only.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets `python bench/training_zip.py` run without the package being installed.
    sys.path.insert(0, str(REPO_ROOT))

from validate_images import ensure_photos  # noqa: E402

from ecomdream.imaging import normalise_image  # noqa: E402
from ecomdream.ziputil import iter_zip_parts  # noqa: E402

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


def child(count: int, part_size: int) -> dict[str, float]:
    """Build one archive of ``count`` photos and return the memory and time figures."""
    paths = ensure_photos(count)
    # Touch the decoder and encoder once so their one-off allocations count as baseline, not growth.
    normalise_image(paths[0])
    gc.collect()
    baseline = current_rss()
    parts = 0
    started = time.perf_counter()
    with tempfile.TemporaryFile() as sink:
        with PeakSampler() as sampler:
            entries = ((f"{i:02d}.jpg", normalise_image(path)) for i, path in enumerate(paths))
            for part in iter_zip_parts(entries, part_size):
                sink.write(part)
                parts += 1
        elapsed = time.perf_counter() - started
        max_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
        size = sink.tell()
        sink.seek(0)
        with zipfile.ZipFile(sink) as archive:
            if archive.testzip() is not None or len(archive.namelist()) != count:
                raise SystemExit("archive verification failed")
    return {
        "count": count,
        "baseline_mb": baseline / MB,
        "peak_above_mb": (max(max_rss, sampler.peak) - baseline) / MB,
        "sampled_above_mb": (sampler.peak - baseline) / MB,
        "seconds": elapsed,
        "zip_mb": size / MB,
        "parts": parts,
        "input_mb": sum(p.stat().st_size for p in paths) / MB,
    }


def main() -> None:
    """Run each count in a child process and print the table."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--counts", type=int, nargs="+", default=[10, 20, 30], help="photo counts (default 10 20 30)"
    )
    parser.add_argument("--part-mib", type=int, default=8, help="part size in MiB (default 8)")
    parser.add_argument("--child", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    part_size = args.part_mib * 1024 * 1024

    if args.child is not None:
        print(json.dumps(child(args.child, part_size)))
        return

    ensure_photos(max(args.counts))
    print(f"part size {args.part_mib} MiB; normalise to 1024 px JPEG q90; parts written to a temp file")
    print(
        f"{'photos':>6} {'input MB':>9} {'zip MB':>7} {'parts':>5} {'time s':>7} {'baseline MB':>12} {'peak above baseline MB':>23}"
    )
    for count in args.counts:
        result = subprocess.run(
            [sys.executable, __file__, "--child", str(count), "--part-mib", str(args.part_mib)],
            check=True,
            capture_output=True,
            text=True,
        )
        r = json.loads(result.stdout.strip().splitlines()[-1])
        print(
            f"{r['count']:>6} {r['input_mb']:>9.0f} {r['zip_mb']:>7.1f} {r['parts']:>5} {r['seconds']:>7.1f} "
            f"{r['baseline_mb']:>12.0f} {r['peak_above_mb']:>14.1f} (sampled {r['sampled_above_mb']:.1f})",
            flush=True,
        )


if __name__ == "__main__":
    main()

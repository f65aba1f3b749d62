"""Benchmark upload validation: full single-threaded decode vs validate_images (draft decode, thread pool).

Run from the repo root: ``python bench/validate_images.py [--photos N]``. Photos are generated once
into a cache directory under the system temp dir and reused by later runs.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from PIL import Image, ImageChops

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    # Lets `python bench/validate_images.py` run without the package being installed.
    sys.path.insert(0, str(REPO_ROOT))

from ecomdream.imaging import check_image, validate_images  # noqa: E402

PHOTO_SIZE = (4000, 3000)
NOISE_SIGMA = 44.0
JPEG_QUALITY = 95  # with this grain: about 8 MB per 12 MP photo, like a good phone camera


def make_photo(path: Path, seed: int, grain: Image.Image) -> None:
    """Write a camera-like JPEG: smooth gradients (scene), sensor grain and some hard-edged objects."""
    rng = random.Random(seed)
    width, height = PHOTO_SIZE
    bands = []
    for _ in range(3):
        gradient = (
            Image.linear_gradient("L")
            .rotate(rng.uniform(0, 360))
            .resize(PHOTO_SIZE, Image.Resampling.BILINEAR)
        )
        # Shifting one shared noise field per band is much cheaper than fresh noise and JPEG can't tell.
        shifted = ImageChops.offset(grain, rng.randrange(width), rng.randrange(height))
        bands.append(ImageChops.add(gradient, shifted, scale=2.0, offset=rng.randint(-40, 40)))
    photo = Image.merge("RGB", bands)
    for _ in range(12):
        x, y = rng.randrange(width), rng.randrange(height)
        box = (x, y, min(width, x + rng.randint(200, 900)), min(height, y + rng.randint(200, 900)))
        photo.paste((rng.randrange(256), rng.randrange(256), rng.randrange(256)), box)
    photo.save(path, format="JPEG", quality=JPEG_QUALITY)


def ensure_photos(count: int) -> list[Path]:
    """Return ``count`` cached ~8 MB 12 MP photo paths (shared by the bench scripts), generating missing ones."""
    cache = (
        Path(tempfile.gettempdir())
        / f"ecomdream-bench-photos-{PHOTO_SIZE[0]}x{PHOTO_SIZE[1]}-q{JPEG_QUALITY}"
    )
    cache.mkdir(exist_ok=True)
    paths = [cache / f"photo-{i:03d}.jpg" for i in range(count)]
    missing = [(i, p) for i, p in enumerate(paths) if not p.exists() or p.stat().st_size == 0]
    if missing:
        print(
            f"generating {len(missing)} photos of {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} into {cache} ...",
            flush=True,
        )
        started = time.perf_counter()
        grain = Image.effect_noise(PHOTO_SIZE, NOISE_SIGMA)
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(lambda item: make_photo(item[1], item[0], grain), missing))
        print(f"  generated in {time.perf_counter() - started:.1f} s", flush=True)
    return paths


def timed(label: str, count: int, run: Callable[[], object]) -> float:
    """Run once, print and return the wall time."""
    started = time.perf_counter()
    run()
    elapsed = time.perf_counter() - started
    print(f"{label:<55} {elapsed:7.2f} s   {count / elapsed:6.1f} photos/s", flush=True)
    return elapsed


def full_decode(paths: Sequence[Path]) -> None:
    """Baseline: what a naive validator does, a full decode of each photo on one thread."""
    for path in paths:
        with Image.open(path) as im:
            im.load()


def main() -> None:
    """Parse flags, prepare photos, print the timings."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--photos", type=int, default=30, help="number of photos (default 30)")
    args = parser.parse_args()
    count: int = args.photos

    paths = ensure_photos(count)
    sizes = [p.stat().st_size for p in paths]
    workers = os.cpu_count() or 1
    print(
        f"{count} photos, {PHOTO_SIZE[0]}x{PHOTO_SIZE[1]} JPEG, "
        f"{min(sizes) / 1e6:.1f}-{max(sizes) / 1e6:.1f} MB each ({sum(sizes) / 1e6:.0f} MB total), {workers} CPUs"
    )
    files = [(p.name, p) for p in paths]

    # Warm the page cache so both variants measure decoding, not the first disk read.
    for path in paths:
        path.read_bytes()

    baseline = timed("(a) full decode, Image.open().load(), 1 thread", count, lambda: full_decode(paths))
    sequential = timed(
        "(c) check_image (draft decode), 1 thread",
        count,
        lambda: [check_image(name, path) for name, path in files],
    )
    problems: list[object] = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        parallel = timed(
            f"(b) validate_images, ThreadPoolExecutor({workers})",
            count,
            lambda: problems.extend(
                validate_images(files, min_side=512, max_pixels=50_000_000, executor=pool)
            ),
        )
    print(f"problems reported: {len(problems)} (expected 0)")
    print(
        f"speed-up (b) vs (a): {baseline / parallel:.1f}x   [draft alone (c) vs (a): {baseline / sequential:.1f}x]"
    )


if __name__ == "__main__":
    main()

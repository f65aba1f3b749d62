"""Shared by the photo bench scripts: cached camera-like photos, and the worker's photo activities on an S3 of
their own (SeaweedFS on a free port, data in a temporary directory).

The scripts put the repo root on ``sys.path`` before importing this module.
"""

from __future__ import annotations

import contextlib
import os
import random
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AsyncExitStack
from pathlib import Path

from PIL import Image, ImageChops
from pydantic import SecretStr

from activities import image_activities
from activities.images import ImageActivities
from ecomdream.clients.storage import Storage
from ecomdream.config import Settings
from ecomdream.contracts.training import StagedPhoto
from ecomdream.devstack.processes import free_port
from ecomdream.devstack.s3 import SeaweedS3
from ecomdream.devstack.stack import S3_ACCESS_KEY, S3_BUCKET, S3_SECRET_KEY

PHOTO_SIZE = (4000, 3000)
NOISE_SIGMA = 44.0
JPEG_QUALITY = 95  # with this grain: about 8 MB per 12 MP photo, like a good phone camera
STAGING = "staging/bench/"


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
    """Return ``count`` cached ~8 MB 12 MP photo paths, generating missing ones."""
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


@contextlib.contextmanager
def s3_server() -> Iterator[str]:
    """A SeaweedFS S3 on a free port with its data in a temporary directory; yields the endpoint URL."""
    data_dir = Path(tempfile.mkdtemp(prefix="ecomdream-bench-s3-"))
    s3 = SeaweedS3(data_dir, free_port(), S3_BUCKET, S3_ACCESS_KEY, S3_SECRET_KEY)
    try:
        s3.start()
        yield s3.endpoint_url
    finally:
        s3.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


async def worker_images(endpoint_url: str, stack: AsyncExitStack) -> ImageActivities:
    """The photo activities wired exactly as the worker wires them, on the given S3; closed with stack."""
    settings = Settings(
        s3_endpoint_url=endpoint_url,
        s3_access_key_id=SecretStr(S3_ACCESS_KEY),
        s3_secret_access_key=SecretStr(S3_SECRET_KEY),
        s3_bucket=S3_BUCKET,
    )
    return image_activities(settings, await Storage.from_settings(settings, stack), stack)


def staged(paths: Sequence[Path]) -> tuple[StagedPhoto, ...]:
    """Where `stage` puts each photo, named as the customer's files."""
    return tuple(StagedPhoto(name=path.name, key=f"{STAGING}{i:03d}") for i, path in enumerate(paths))


async def stage(storage: Storage, paths: Sequence[Path]) -> tuple[StagedPhoto, ...]:
    """Upload the photos to the staging area, as the API does with a customer's upload."""
    photos = staged(paths)
    for photo, path in zip(photos, paths, strict=True):
        await storage.put(photo.key, path.read_bytes(), "image/jpeg")
    return photos

"""What the sandbox's fake models consume and produce: training zips, generated images, progress lines."""

from __future__ import annotations

import base64
import binascii
import io
import random
import tarfile
import urllib.parse
import zipfile
from dataclasses import dataclass
from pathlib import PurePosixPath

from PIL import Image, ImageDraw

from ecomdream.sandbox.replicate_state import JSON

IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".heic", ".heif", ".gif", ".bmp", ".tif", ".tiff"}
)
# Output formats of the FLUX LoRA predictor, mapped to Pillow format and media type.
OUTPUT_FORMATS = {"png": ("PNG", "image/png"), "jpg": ("JPEG", "image/jpeg"), "webp": ("WEBP", "image/webp")}
# The FLUX fine-tuner's aspect ratios, used when the input names one instead of width/height.
ASPECT_RATIOS = {
    "1:1": (1024, 1024),
    "16:9": (1344, 768),
    "21:9": (1536, 640),
    "3:2": (1216, 832),
    "2:3": (832, 1216),
    "4:5": (896, 1088),
    "5:4": (1088, 896),
    "3:4": (896, 1152),
    "4:3": (1152, 896),
    "9:16": (768, 1344),
    "9:21": (640, 1536),
}
MAX_SIDE = 4096
MAX_OUTPUTS = 4


def decode_data_url(url: str) -> bytes:
    """The bytes of a `data:` URL (the SDK sends small files that way)."""
    header, sep, payload = url.partition(",")
    if not sep:
        raise ValueError("malformed data URL")
    if header.endswith(";base64"):
        try:
            return base64.b64decode(payload, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"malformed base64 in data URL: {exc}") from exc
    return urllib.parse.unquote_to_bytes(payload)


def count_zip_images(data: bytes) -> int:
    """How many image files a training zip holds; ValueError with a readable reason when it is unusable."""
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as archive:
            entries = [info.filename for info in archive.infolist() if not info.is_dir()]
            broken = archive.testzip()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as exc:
        raise ValueError(f"input_images is not a valid zip file ({exc})") from exc
    if broken is not None:
        raise ValueError(f"input_images zip is corrupt (bad CRC in {broken})")
    images = [
        name
        for name in entries
        # macOS resource forks (`__MACOSX/`, `._x.jpg`) look like images but are not.
        if PurePosixPath(name).suffix.lower() in IMAGE_SUFFIXES
        and not name.startswith("__MACOSX/")
        and not PurePosixPath(name).name.startswith("._")
    ]
    if not images:
        raise ValueError(
            f"input_images zip contains no image files ({len(entries)} entries; "
            f"expected {', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    return len(images)


def weights_tar(training_id: str) -> bytes:
    """A small tar standing in for the trained LoRA weights."""
    content = f"sandbox LoRA weights for training {training_id}\n".encode()
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        info = tarfile.TarInfo("output/flux_train_replicate/lora.safetensors")
        info.size = len(content)
        tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@dataclass(frozen=True)
class ImageRequest:
    """The parts of a prediction input that shape the generated images."""

    width: int
    height: int
    num_outputs: int
    seed: int
    steps: int
    output_format: str


def _int_input(data: JSON, key: str, default: int, low: int, high: int) -> int:
    value = data.get(key, default)
    if value is None:
        return default
    # bool is an int subclass; a model would reject `true` as a number.
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise ValueError(f"{key}: must be an integer")
    if not low <= int(value) <= high:
        raise ValueError(f"{key}: must be between {low} and {high}")
    return int(value)


def image_request(data: JSON) -> ImageRequest:
    """Read width/height (or aspect_ratio), num_outputs, seed, steps and format; ValueError like model validation."""
    width, height = 1024, 1024
    ratio = data.get("aspect_ratio")
    if isinstance(ratio, str) and ratio in ASPECT_RATIOS:
        width, height = ASPECT_RATIOS[ratio]
    elif ratio not in (None, "custom"):
        raise ValueError(f"aspect_ratio: must be one of {', '.join([*ASPECT_RATIOS, 'custom'])}")
    width = _int_input(data, "width", width, 1, MAX_SIDE)
    height = _int_input(data, "height", height, 1, MAX_SIDE)
    output_format = data.get("output_format") or "png"
    if output_format not in OUTPUT_FORMATS:
        raise ValueError(f"output_format: must be one of {', '.join(OUTPUT_FORMATS)}")
    seed = data.get("seed")
    return ImageRequest(
        width=width,
        height=height,
        num_outputs=_int_input(data, "num_outputs", 1, 1, MAX_OUTPUTS),
        seed=random.randrange(2**32) if seed is None else _int_input(data, "seed", 0, -(2**63), 2**63),
        steps=_int_input(data, "num_inference_steps", 28, 1, 500),
        output_format=str(output_format),
    )


def render_image(request: ImageRequest, index: int) -> bytes:
    """A solid image whose colours depend on seed and index, with an inset block so outputs differ visibly."""
    rng = random.Random(request.seed * 31 + index)
    background = (rng.randrange(256), rng.randrange(256), rng.randrange(256))
    accent = (255 - background[0], 255 - background[1], 255 - background[2])
    image = Image.new("RGB", (request.width, request.height), background)
    box = (request.width // 4, request.height // 4, request.width * 3 // 4, request.height * 3 // 4)
    ImageDraw.Draw(image).rectangle(box, fill=accent)
    buffer = io.BytesIO()
    image.save(buffer, format=OUTPUT_FORMATS[request.output_format][0])
    return buffer.getvalue()


def _clock(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours:d}:{minutes:02d}:{secs:02d}" if hours else f"{minutes:02d}:{secs:02d}"


def progress_line(done: int, total: int, elapsed: float) -> str:
    """A tqdm-style line (`  42%|████      | 420/1000 [00:10<00:14, 40.1it/s]`) the SDK's progress parser reads."""
    percent = done * 100 // total
    bar = "█" * (percent // 10) + " " * (10 - percent // 10)
    if done == 0 or elapsed <= 0:
        return f"{percent:4d}%|{bar}| {done}/{total} [00:00<?, ?it/s]"
    rate = done / elapsed
    return f"{percent:4d}%|{bar}| {done}/{total} [{_clock(elapsed)}<{_clock((total - done) / rate)}, {rate:.1f}it/s]"

"""Image checks and normalisation for customer uploads: pure Pillow code, no network, no settings.

Every limit is a parameter so callers (API, activities, tests) decide them. Nothing here trusts file
names or client-supplied content types: formats come from magic bytes, sizes from the file headers.

Decisions worth knowing:

* Accepted formats are JPEG, PNG, WebP and HEIC/HEIF. Other images (GIF, TIFF, AVIF, ...) get a
  message naming their format so the customer knows what to convert.
* Animated PNG/WebP are rejected ("is an animated image; please upload a still photo"): training
  wants stills, and silently using frame one of an animation could train on a frame the customer
  never meant as a photo. Multi-image HEIC (bursts, depth maps) is not animation: its primary image
  is used.
* The pixel-count limit is checked from our own header parse before Pillow is involved, so a
  decompression bomb never allocates; Pillow's global ``Image.MAX_IMAGE_PIXELS`` is left untouched
  (mutating it would leak across threads) and only acts as a second line of defence.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import struct
import zlib
from collections.abc import Iterator
from typing import IO, Final, TypeAlias

import pillow_heif
from PIL import Image, ImageCms, ImageFile
from pydantic import BaseModel, ConfigDict

pillow_heif.register_heif_opener()

ImageSource: TypeAlias = bytes | bytearray | memoryview | str | os.PathLike[str] | IO[bytes]
"""Raw bytes, a filesystem path, or a readable binary file object."""

SUPPORTED_LABEL: Final = "JPEG, PNG, WebP or HEIC"

MSG_UNREADABLE: Final = "is not an image we can read (supported: JPEG, PNG, WebP, HEIC)"
MSG_EMPTY: Final = "is an empty file"
MSG_CORRUPT: Final = "is truncated or corrupt"
MSG_ANIMATED: Final = "is an animated image; please upload a still photo"

# Content types we accept, and the Pillow plugins allowed to open them: restricting Image.open to
# these keeps every other (less hardened) Pillow decoder away from hostile bytes.
_ACCEPTED: Final = frozenset(
    {
        "image/jpeg",
        "image/png",
        "image/webp",
        "image/heic",
        "image/heif",
        "image/heic-sequence",
        "image/heif-sequence",
    }
)
_PILLOW_FORMATS: Final = ("JPEG", "PNG", "WEBP", "HEIF")

# How rejected formats are named to the customer.
_FORMAT_NAMES: Final = {
    "image/gif": "a GIF",
    "image/tiff": "a TIFF",
    "image/bmp": "a BMP",
    "image/avif": "an AVIF",
    "image/jp2": "a JPEG 2000",
    "image/jxl": "a JPEG XL",
    "image/x-icon": "an icon (ICO)",
    "image/vnd.adobe.photoshop": "a Photoshop (PSD) file",
    "image/svg+xml": "an SVG",
}

_HEIC_BRANDS: Final = {
    b"heic": "image/heic",
    b"heix": "image/heic",
    b"heim": "image/heic",
    b"heis": "image/heic",
    b"hevc": "image/heic-sequence",
    b"hevx": "image/heic-sequence",
    b"hevm": "image/heic-sequence",
    b"hevs": "image/heic-sequence",
    b"mif1": "image/heif",
    b"heif": "image/heif",
    b"msf1": "image/heif-sequence",
}
_AVIF_BRANDS: Final = frozenset({b"avif", b"avis"})
_HEVC_BRANDS: Final = frozenset(
    brand for brand, kind in _HEIC_BRANDS.items() if kind.startswith("image/heic")
)

SNIFF_BYTES: Final = 64
"""How many leading bytes ``sniff_format`` needs to see."""

# EXIF orientations 5-8 are rotations by 90°: the displayed width is the stored height.
_ORIENTATION_TRANSPOSE: Final = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_EXIF_ORIENTATION_TAG: Final = 0x0112

# Header scans give up after this much input: a real photo has its size long before that.
_MAX_HEADER_SCAN: Final = 32 * 1024 * 1024
_MAX_META_BOX: Final = 16 * 1024 * 1024
# Structure counts no camera or editor comes near. A file past them is refused as corrupt before
# any decoder walks it: millions of 4-byte segments would otherwise hold the GIL for seconds.
_MAX_JPEG_SEGMENTS: Final = 2_000
_MAX_JPEG_FILL_BYTES: Final = 1_024
_MAX_PNG_CHUNKS: Final = 100_000
# How far into a text file we look for an SVG root element (XML prologs and comments come first).
_SVG_SNIFF_BYTES: Final = 4096


class _Malformed(Exception):
    """A file's structure is broken or built to exhaust us; the customer hears MSG_CORRUPT."""


class ImageProblem(BaseModel):
    """One customer-visible problem with one uploaded file; render as ``f"{file} {error}"``."""

    model_config = ConfigDict(frozen=True)

    file: str
    error: str

    def __str__(self) -> str:
        """The full customer-readable sentence."""
        return f"{self.file} {self.error}"


def sniff_format(head: bytes) -> str | None:
    """Return the content type implied by a file's first bytes (see ``SNIFF_BYTES``), or None."""
    if head.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[4:8] == b"ftyp":
        return _sniff_isobmff(head)
    if head.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if head.startswith((b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")):
        return "image/tiff"
    if (
        head.startswith(b"BM")
        and len(head) >= 18
        and int.from_bytes(head[14:18], "little") in {12, 40, 52, 56, 64, 108, 124}
    ):
        return "image/bmp"
    if head.startswith((b"\x00\x00\x00\x0cjP  \r\n\x87\n", b"\xff\x4f\xff\x51")):
        return "image/jp2"
    if head.startswith((b"\xff\x0a", b"\x00\x00\x00\x0cJXL \r\n\x87\n")):
        return "image/jxl"
    if head.startswith(b"\x00\x00\x01\x00") and len(head) >= 6 and head[4:6] != b"\x00\x00":
        return "image/x-icon"
    if head.startswith(b"8BPS"):
        return "image/vnd.adobe.photoshop"
    stripped = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in stripped):
        return "image/svg+xml"
    return None


def _sniff_isobmff(head: bytes) -> str | None:
    """Classify an ISO base media file (HEIF family, AVIF) by its major and compatible brands."""
    box_size = int.from_bytes(head[:4], "big")
    major = head[8:12]
    # Compatible brands follow the minor version; only those inside the ftyp box and our window count.
    end = min(max(box_size, 16), len(head))
    compatible = {head[i : i + 4] for i in range(16, end - 3, 4)}
    if major in _AVIF_BRANDS:
        return "image/avif"
    if major in _HEIC_BRANDS:
        # mif1/msf1 are generic HEIF brands also used by AVIF files; the codec brand decides.
        if major in {b"mif1", b"msf1"} and compatible & _AVIF_BRANDS and not compatible & _HEVC_BRANDS:
            return "image/avif"
        return _HEIC_BRANDS[major]
    if compatible & _AVIF_BRANDS:
        return "image/avif"
    for brand in (b"heic", b"heix", b"mif1", b"msf1"):
        if brand in compatible:
            return _HEIC_BRANDS[brand]
    return None


def check_image(
    name: str, data: ImageSource, *, min_side: int = 512, max_pixels: int = 50_000_000
) -> ImageProblem | None:
    """Return the customer-visible problem with one upload, or None if it is a usable photo."""
    _require_strict_loading()
    try:
        with _seekable(data) as fp:
            error = _check_stream(fp, min_side=min_side, max_pixels=max_pixels)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # Pillow's own guard fired before we learnt the size: our header parse failed on this file.
        error = f"is too large (the limit is {_megapixels(_effective_limit(max_pixels))} megapixels)"
    except Exception:
        # Hostile input must never escape as an exception; whatever broke, the file is unusable.
        error = MSG_CORRUPT
    return None if error is None else ImageProblem(file=name, error=error)


def _check_stream(fp: IO[bytes], *, min_side: int, max_pixels: int) -> str | None:
    """The checks behind ``check_image``, in the order a customer should hear about them."""
    start = fp.tell()
    head = fp.read(SNIFF_BYTES)
    if not head:
        return MSG_EMPTY
    content_type = sniff_format(head)
    if content_type is None and head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(b"<"):
        # XML prologs, doctypes and generator comments can push an SVG's root element far back.
        text = (head + fp.read(_SVG_SNIFF_BYTES - len(head))).lower()
        if b"<svg" in text:
            content_type = "image/svg+xml"
    if content_type is None:
        return MSG_UNREADABLE
    if content_type not in _ACCEPTED:
        return (
            f"is {_FORMAT_NAMES.get(content_type, 'an unsupported image')}; please upload {SUPPORTED_LABEL}"
        )

    # Pillow refuses anything above twice its global limit, so that caps what a caller may allow.
    limit = _effective_limit(max_pixels)
    fp.seek(start)
    try:
        header_size = _header_size(fp, content_type)
        if content_type == "image/png":
            fp.seek(start)
            _check_png_chunks(fp)
    except _Malformed:
        return MSG_CORRUPT
    if header_size is not None and header_size[0] * header_size[1] > limit:
        return _too_large(header_size, limit)

    fp.seek(start)
    with Image.open(fp, formats=_PILLOW_FORMATS) as im:
        width, height = im.size
        if width * height > limit:
            return _too_large(im.size, limit)
        if im.format in {"PNG", "WEBP"} and getattr(im, "is_animated", False):
            return MSG_ANIMATED
        shown_w, shown_h = _displayed_size(im)
        if shown_w < min_side or shown_h < min_side:
            return f"is {shown_w}\u00d7{shown_h} pixels; photos must be at least {min_side}\u00d7{min_side}"
        if im.format == "JPEG":
            # Reduced-scale DCT decode: every entropy-coded byte is still read (so truncation and
            # corruption surface), but only 1/64 of the pixels are reconstructed.
            im.draft("RGB", (max(1, width // 8), max(1, height // 8)))
        im.load()
    return None


def normalise_image(data: ImageSource, *, max_side: int = 1024, quality: int = 90) -> bytes:
    """Return the photo as an upright sRGB baseline JPEG, longest side <= max_side, metadata stripped."""
    # All pixel work stays inside the with-block: closing a Pillow image invalidates its core, and
    # _to_8bit may hand back the source image itself.
    with _seekable(data) as fp, Image.open(fp, formats=_PILLOW_FORMATS) as source:
        transpose = _ORIENTATION_TRANSPOSE.get(_orientation(source))
        icc_profile = source.info.get("icc_profile")
        target = _fit(source.size, max_side)
        # Let JPEG (DCT scaling) and HEIF (embedded thumbnails) decode at a reduced size that is still
        # >= 1.5x the target, so LANCZOS has real pixels to work with: a 12 MP JPEG decodes at 1/2 scale
        # (12 MB instead of 48 MB of pixels) and about twice as fast.
        source.draft(None, (math.ceil(target[0] * 1.5), math.ceil(target[1] * 1.5)))
        source.load()
        im = _to_8bit(source)
        if im.size != target:
            im = im.resize(target, Image.Resampling.LANCZOS, reducing_gap=2.0)
        if transpose is not None:
            im = im.transpose(transpose)
        im = _flatten_alpha(im)
        im = _to_srgb(im, icc_profile if isinstance(icc_profile, bytes) else None)
        # Pillow's JPEG writer copies some metadata (comments, XMP) from im.info; start from nothing.
        im.info = {}
        out = io.BytesIO()
        im.save(out, format="JPEG", quality=quality, optimize=True, progressive=False)
    return out.getvalue()


def image_size(data: ImageSource) -> tuple[int, int]:
    """Return the stored (width, height) of an image, reading only its header."""
    with _seekable(data) as fp, Image.open(fp) as im:
        return im.size


def _require_strict_loading() -> None:
    """Refuse to validate if someone enabled Pillow's truncated-image tolerance process-wide."""
    if ImageFile.LOAD_TRUNCATED_IMAGES:
        # With it on, truncated uploads would silently pass and then train on grey half-images.
        raise RuntimeError("PIL.ImageFile.LOAD_TRUNCATED_IMAGES must stay False for upload validation")


@contextlib.contextmanager
def _seekable(data: ImageSource) -> Iterator[IO[bytes]]:
    """Yield a seekable binary stream over any ``ImageSource``, closing only what we opened."""
    if isinstance(data, bytes | bytearray | memoryview):
        yield io.BytesIO(data)
    elif isinstance(data, str | os.PathLike):
        with open(data, "rb") as f:
            yield f
    elif data.seekable():
        # Pillow always reads from offset 0, so the checks here must too.
        data.seek(0)
        yield data
    else:
        yield io.BytesIO(data.read())


def _orientation(im: Image.Image) -> int:
    """EXIF orientation (1-8) of an opened image; 1 when absent or unreadable."""
    try:
        value = im.getexif().get(_EXIF_ORIENTATION_TAG, 1)
    except Exception:
        # Broken EXIF is common on edited photos and must not reject an otherwise good image.
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def _displayed_size(im: Image.Image) -> tuple[int, int]:
    """Size as the customer sees the photo, i.e. after EXIF orientation."""
    width, height = im.size
    return (height, width) if _orientation(im) >= 5 else (width, height)


def _too_large(size: tuple[int, int], max_pixels: int) -> str:
    """The customer message for a photo over the pixel limit."""
    return f"is too large ({_megapixels(size[0] * size[1], round_up=True)} megapixels; the limit is {_megapixels(max_pixels)})"


def _effective_limit(max_pixels: int) -> int:
    """The pixel limit actually enforced: ours, or Pillow's hard limit if that is lower."""
    pillow_max = Image.MAX_IMAGE_PIXELS
    return max_pixels if pillow_max is None else min(max_pixels, 2 * pillow_max)


def _megapixels(pixels: int, *, round_up: bool = False) -> str:
    """Format a pixel count as megapixels, one decimal at most; rounding up keeps 50.01 MP from reading as 50."""
    tenths = pixels / 100_000
    tenths = math.ceil(tenths) if round_up else round(tenths)
    value = tenths / 10
    return f"{value:,.0f}" if tenths % 10 == 0 else f"{value:,.1f}"


def _fit(size: tuple[int, int], max_side: int) -> tuple[int, int]:
    """Scale ``size`` so its longest side is at most ``max_side``, keeping the aspect ratio."""
    width, height = size
    longest = max(width, height)
    if longest <= max_side:
        return width, height
    scale = max_side / longest
    return max(1, round(width * scale)), max(1, round(height * scale))


def _to_8bit(im: Image.Image) -> Image.Image:
    """Convert any decoded mode to one of L, LA, RGB, RGBA or CMYK with 8-bit channels."""
    mode = im.mode
    if mode in {"L", "LA", "RGB", "RGBA", "CMYK"}:
        return im
    if mode.startswith("I;16") or mode in {"I", "F"}:
        # Plain convert("L") clips 16-bit values at 255 (a white image); scale the range instead.
        wide = im.convert("I") if mode.startswith("I;16") else im
        low, high = wide.getextrema()
        if (
            not isinstance(low, int | float)
            or not isinstance(high, int | float)
            or (high <= 255 and low >= 0)
        ):
            return wide.convert("L")
        scale = 1 / 256 if high < 65536 else 255 / high
        return wide.point(lambda v: v * scale).convert("L")
    if mode in {"P", "PA"}:
        has_alpha = mode == "PA" or "transparency" in im.info
        return im.convert("RGBA" if has_alpha else "RGB")
    if mode == "1":
        return im.convert("L")
    if mode in {"La", "RGBa"}:
        return im.convert("RGBA")
    return im.convert("RGB")


def _flatten_alpha(im: Image.Image) -> Image.Image:
    """Composite transparent pixels onto white, since JPEG has no alpha."""
    if im.mode not in {"LA", "RGBA"}:
        return im
    base_mode = "L" if im.mode == "LA" else "RGB"
    background = Image.new(base_mode, im.size, 255 if base_mode == "L" else (255, 255, 255))
    background.paste(im, mask=im.getchannel("A"))
    return background


_SRGB: Final = ImageCms.createProfile("sRGB")


def _to_srgb(im: Image.Image, icc_profile: bytes | None) -> Image.Image:
    """Convert to sRGB RGB, honouring an embedded ICC profile (Display P3 phones, CMYK print files)."""
    if icc_profile:
        try:
            converted = ImageCms.profileToProfile(
                im, ImageCms.ImageCmsProfile(io.BytesIO(icc_profile)), _SRGB, outputMode="RGB"
            )
        except Exception:
            # A broken or mismatched profile is the file's fault, not a reason to reject it.
            converted = None
        if converted is not None:
            return converted
    return im if im.mode == "RGB" else im.convert("RGB")


def _header_size(fp: IO[bytes], content_type: str) -> tuple[int, int] | None:
    """Width and height straight from the file header, without Pillow; None if it cannot be found."""
    try:
        if content_type == "image/png":
            return _png_size(fp.read(24))
        if content_type == "image/jpeg":
            return _jpeg_size(fp)
        if content_type == "image/webp":
            return _webp_size(fp.read(30))
        return _heif_size(fp)
    except (OSError, ValueError, struct.error):
        return None


def _png_size(head: bytes) -> tuple[int, int] | None:
    """Size from the IHDR chunk, which the PNG spec requires to come first."""
    if len(head) < 24 or head[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", head[16:24])
    return _positive(width, height)


_JPEG_SOF: Final = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
_JPEG_STANDALONE: Final = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """Size from the frame header, walking (possibly huge) APPn metadata by segment length.

    The walk goes on to the start of scan, so every segment a decoder would parse has been counted:
    floods of tiny segments or fill bytes raise ``_Malformed`` instead of costing seconds.
    """
    start = fp.tell()
    if fp.read(2) != b"\xff\xd8":
        return None
    size: tuple[int, int] | None = None
    for _ in range(_MAX_JPEG_SEGMENTS):
        if fp.tell() - start >= _MAX_HEADER_SCAN:
            return size
        byte = fp.read(1)
        if byte != b"\xff":
            return size
        marker = 0xFF
        fill = 0
        while marker == 0xFF:
            raw = fp.read(1)
            if not raw:
                return size
            marker = raw[0]
            fill += 1
            if fill > _MAX_JPEG_FILL_BYTES:
                raise _Malformed("fill-byte flood")
        if marker in _JPEG_STANDALONE:
            continue
        if marker in {0xD9, 0xDA}:
            # Start of scan ends the header; EOI before a frame header is malformed.
            return size
        length_raw = fp.read(2)
        if len(length_raw) < 2:
            return size
        length = int.from_bytes(length_raw, "big")
        if length < 2:
            return size
        if marker in _JPEG_SOF and size is None:
            frame = fp.read(5)
            if len(frame) < 5:
                return None
            height, width = struct.unpack(">HH", frame[1:5])
            size = _positive(width, height)
            fp.seek(length - 7, io.SEEK_CUR)
            continue
        fp.seek(length - 2, io.SEEK_CUR)
    raise _Malformed("segment flood")


def _check_png_chunks(fp: IO[bytes]) -> None:
    """Verify every chunk's CRC up to IEND: Pillow checks none of the pixel data's checksums."""
    if fp.read(8) != b"\x89PNG\r\n\x1a\n":
        raise _Malformed("signature")
    for _ in range(_MAX_PNG_CHUNKS):
        header = fp.read(8)
        if len(header) < 8:
            # Truncated before IEND: Pillow's decode reports it the same way.
            raise _Malformed("truncated")
        length = int.from_bytes(header[:4], "big")
        if length > 0x7FFFFFFF:
            raise _Malformed("chunk length")
        crc = zlib.crc32(header[4:8])
        remaining = length
        while remaining:
            block = fp.read(min(remaining, 1 << 20))
            if not block:
                raise _Malformed("truncated")
            crc = zlib.crc32(block, crc)
            remaining -= len(block)
        stored = fp.read(4)
        if len(stored) < 4 or int.from_bytes(stored, "big") != crc:
            raise _Malformed("chunk checksum")
        if header[4:8] == b"IEND":
            return
    raise _Malformed("chunk flood")


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """Canvas size from the first chunk of a RIFF/WebP file (lossy, lossless or extended)."""
    if len(head) < 30:
        return None
    chunk = head[12:16]
    if chunk == b"VP8 ":
        width = int.from_bytes(head[26:28], "little") & 0x3FFF
        height = int.from_bytes(head[28:30], "little") & 0x3FFF
        return _positive(width, height)
    if chunk == b"VP8L":
        bits = int.from_bytes(head[21:25], "little")
        return _positive((bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1)
    if chunk == b"VP8X":
        return _positive(int.from_bytes(head[24:27], "little") + 1, int.from_bytes(head[27:30], "little") + 1)
    return None


def _heif_size(fp: IO[bytes]) -> tuple[int, int] | None:
    """Largest ``ispe`` (image spatial extent) in the meta box: the primary or grid image is never smaller."""
    start = fp.tell()
    while fp.tell() - start < _MAX_HEADER_SCAN:
        header = _read_box_header(fp)
        if header is None:
            return None
        box_type, payload_size = header
        if box_type == b"meta":
            if payload_size is None or payload_size > _MAX_META_BOX:
                return None
            meta = fp.read(payload_size)
            sizes = list(_ispe_sizes(meta[4:], depth=0))  # meta is a FullBox: skip version+flags
            if not sizes:
                return None
            return max(sizes, key=lambda s: s[0] * s[1])
        if payload_size is None:
            return None
        fp.seek(payload_size, io.SEEK_CUR)
    return None


def _read_box_header(fp: IO[bytes]) -> tuple[bytes, int | None] | None:
    """Read an ISO-BMFF box header; return (type, payload size) with None size meaning 'to end of file'."""
    raw = fp.read(8)
    if len(raw) < 8:
        return None
    size, box_type = struct.unpack(">I4s", raw)
    if size == 1:
        large = fp.read(8)
        if len(large) < 8:
            return None
        size = struct.unpack(">Q", large)[0] - 16
    elif size == 0:
        return box_type, None
    else:
        size -= 8
    if size < 0:
        return None
    return box_type, size


_HEIF_CONTAINERS: Final = frozenset({b"iprp", b"ipco"})


def _ispe_sizes(payload: bytes, *, depth: int) -> Iterator[tuple[int, int]]:
    """Yield every ispe extent found under iprp/ipco in a meta box payload."""
    if depth > 4:
        return
    reader = io.BytesIO(payload)
    while True:
        header = _read_box_header(reader)
        if header is None:
            return
        box_type, size = header
        body = reader.read() if size is None else reader.read(size)
        if box_type == b"ispe" and len(body) >= 12:
            width, height = struct.unpack(">II", body[4:12])
            if (dims := _positive(width, height)) is not None:
                yield dims
        elif box_type in _HEIF_CONTAINERS:
            yield from _ispe_sizes(body, depth=depth + 1)
        if size is None:
            return


def _positive(width: int, height: int) -> tuple[int, int] | None:
    """The size if both sides are positive (0 means 'unknown' in several headers)."""
    return (width, height) if width > 0 and height > 0 else None

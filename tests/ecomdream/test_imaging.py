"""Tests for ecomdream.imaging: every image is generated in memory; size limits use crafted headers."""

# The messages customers see use the multiplication sign; assert them verbatim.
# ruff: noqa: RUF001

from __future__ import annotations

import io
import random
import struct
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import Image, ImageCms, ImageFile

from ecomdream.imaging import (
    ImageProblem,
    check_image,
    image_size,
    normalise_image,
    sniff_format,
)

SUPPORTED = "JPEG, PNG, WebP or HEIC"
UNREADABLE = "is not an image we can read (supported: JPEG, PNG, WebP, HEIC)"
CORRUPT = "is truncated or corrupt"


# --- image factories -------------------------------------------------------------------------


def noise(size: tuple[int, int], mode: str = "RGB", seed: int = 0) -> Image.Image:
    """A photo-like image that does not compress to nothing (so truncation really cuts pixel data)."""
    bands = len(mode) if mode != "L" else 1
    data = random.Random(seed).randbytes(size[0] * size[1] * bands)
    return Image.frombytes(mode, size, data)


def encode(im: Image.Image, fmt: str, **params: object) -> bytes:
    """Serialise an image to bytes."""
    out = io.BytesIO()
    im.save(out, format=fmt, **params)
    return out.getvalue()


def jpeg(size: tuple[int, int] = (600, 600), *, orientation: int | None = None, **params: object) -> bytes:
    """A noisy JPEG, optionally with an EXIF orientation tag."""
    if orientation is not None:
        exif = Image.Exif()
        exif[0x0112] = orientation
        params["exif"] = exif.tobytes()
    return encode(noise(size), "JPEG", quality=85, **params)


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    """One PNG chunk with a correct CRC."""
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def png_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims width x height but whose pixel data is a few bytes."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", ihdr)
        + png_chunk(b"IDAT", zlib.compress(b"\x00" * 64))
        + png_chunk(b"IEND", b"")
    )


def with_png_chunk(png: bytes, kind: bytes, payload: bytes) -> bytes:
    """Insert an extra chunk right after IHDR (so it is parsed while opening)."""
    ihdr_end = 8 + 25
    return png[:ihdr_end] + png_chunk(kind, payload) + png[ihdr_end:]


def jpeg_with_frame_size(width: int, height: int) -> bytes:
    """A small real JPEG whose SOF header is patched to claim another size."""
    data = bytearray(encode(Image.new("RGB", (16, 16), "red"), "JPEG"))
    sof = data.index(b"\xff\xc0")
    data[sof + 5 : sof + 9] = struct.pack(">HH", height, width)
    return bytes(data)


def heic(size: tuple[int, int] = (600, 600)) -> bytes:
    """A HEIC encoded by pillow-heif (it bundles x265 here; see test_heic_encoder_available)."""
    # A smooth gradient: x265 encodes it far faster than noise, and the file still has real content.
    gradient = Image.linear_gradient("L").resize(size).convert("RGB")
    return encode(gradient, "HEIF", quality=60)


def heic_encoder_available() -> bool:
    """Whether this pillow-heif build can encode HEVC."""
    return bool(pillow_heif.libheif_info().get("HEIF"))


needs_heic_encoder = pytest.mark.skipif(
    not heic_encoder_available(), reason="pillow-heif build has no HEVC encoder, cannot generate HEIC"
)


def error_of(name: str, data: bytes, **limits: int) -> str | None:
    """The customer-visible error for one file, or None."""
    problem = check_image(name, data, **limits)
    return None if problem is None else problem.error


# --- sniff_format ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("head", "expected"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "image/jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "image/png"),
        (b"RIFF\x00\x00\x00\x00WEBPVP8 ", "image/webp"),
        (b"\x00\x00\x00\x18ftypheic\x00\x00\x00\x00mif1heic", "image/heic"),
        (b"\x00\x00\x00\x18ftypheix\x00\x00\x00\x00mif1heix", "image/heic"),
        (b"\x00\x00\x00\x18ftypheim\x00\x00\x00\x00mif1heim", "image/heic"),
        (b"\x00\x00\x00\x18ftypheis\x00\x00\x00\x00mif1heis", "image/heic"),
        (b"\x00\x00\x00\x18ftyphevc\x00\x00\x00\x00msf1hevc", "image/heic-sequence"),
        (b"\x00\x00\x00\x18ftypmif1\x00\x00\x00\x00mif1heic", "image/heif"),
        (b"\x00\x00\x00\x14ftypheif\x00\x00\x00\x00mif1", "image/heif"),
        (b"\x00\x00\x00\x18ftypmsf1\x00\x00\x00\x00msf1hevc", "image/heif-sequence"),
        (b"\x00\x00\x00\x1cftypavif\x00\x00\x00\x00avifmif1miaf", "image/avif"),
        (b"\x00\x00\x00\x1cftypmif1\x00\x00\x00\x00mif1avifmiaf", "image/avif"),
        (b"\x00\x00\x00\x18ftypisom\x00\x00\x00\x00isommp41", None),
        (b"GIF89a\x01\x00\x01\x00", "image/gif"),
        (b"GIF87a\x01\x00\x01\x00", "image/gif"),
        (b"II*\x00\x08\x00\x00\x00", "image/tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "image/tiff"),
        (b"BM" + b"\x00" * 12 + b"\x28\x00\x00\x00", "image/bmp"),
        (b"8BPS\x00\x01", "image/vnd.adobe.photoshop"),
        (b"<?xml version='1.0'?><svg xmlns=", "image/svg+xml"),
        (b"hello, this is not an image", None),
        (b"BM is also the start of this sentence", None),
        (b"", None),
    ],
)
def test_sniff_format(head: bytes, expected: str | None) -> None:
    assert sniff_format(head) == expected


def test_sniff_format_on_real_encodings() -> None:
    im = Image.new("RGB", (8, 8))
    assert sniff_format(encode(im, "JPEG")[:64]) == "image/jpeg"
    assert sniff_format(encode(im, "PNG")[:64]) == "image/png"
    assert sniff_format(encode(im, "WEBP")[:64]) == "image/webp"
    assert sniff_format(encode(im, "GIF")[:64]) == "image/gif"
    assert sniff_format(encode(im, "TIFF")[:64]) == "image/tiff"
    assert sniff_format(encode(im, "BMP")[:64]) == "image/bmp"
    assert sniff_format(encode(im, "AVIF")[:64]) == "image/avif"


@needs_heic_encoder
def test_sniff_format_on_real_heic() -> None:
    assert sniff_format(heic((64, 64))[:64]) == "image/heic"


# --- check_image: accepted files --------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "data"),
    [
        ("photo.jpg", jpeg()),
        ("photo.png", encode(noise((600, 600)), "PNG")),
        ("photo.webp", encode(noise((600, 600)), "WEBP", quality=80)),
        ("lossless.webp", encode(noise((520, 520)), "WEBP", lossless=True)),
        ("exactly-min.jpg", jpeg((512, 512))),
        ("cmyk.jpg", encode(noise((600, 600), "CMYK"), "JPEG")),
        ("grey.jpg", encode(noise((600, 600), "L"), "JPEG")),
        ("progressive.jpg", jpeg(progressive=True)),
        ("16bit.png", encode(Image.new("I;16", (600, 600), 40000), "PNG")),
        ("palette.png", encode(noise((600, 600)).convert("P", palette=Image.Palette.ADAPTIVE), "PNG")),
        ("alpha.png", encode(noise((600, 600), "RGBA"), "PNG")),
        ("rotated.jpg", jpeg((600, 520), orientation=6)),
        ("named.gif", jpeg()),  # names are never trusted, in either direction
    ],
)
def test_valid_images_pass(name: str, data: bytes) -> None:
    assert check_image(name, data) is None


def test_16bit_png_really_is_16_bit() -> None:
    data = encode(Image.new("I;16", (600, 600), 40000), "PNG")
    assert data[24] == 16  # IHDR bit depth
    assert Image.open(io.BytesIO(data)).mode == "I;16"


@needs_heic_encoder
def test_heic_passes() -> None:
    assert check_image("iphone.heic", heic()) is None


@needs_heic_encoder
def test_small_heic_is_rejected_for_size() -> None:
    assert error_of("small.heic", heic((300, 200))) == "is 300×200 pixels; photos must be at least 512×512"


@needs_heic_encoder
def test_truncated_heic_is_corrupt() -> None:
    data = heic()
    assert error_of("cut.heic", data[: len(data) // 2]) == CORRUPT


def test_accepts_paths_and_file_objects(tmp_path: Path) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(jpeg())
    assert check_image("photo.jpg", path) is None
    assert check_image("photo.jpg", str(path)) is None
    with path.open("rb") as f:
        assert check_image("photo.jpg", f) is None
        f.seek(100)  # a file object is always read from its start, as Pillow does
        assert check_image("photo.jpg", f) is None
    assert check_image("photo.jpg", io.BufferedReader(NonSeekable(jpeg()))) is None
    assert check_image("small.jpg", io.BufferedReader(NonSeekable(jpeg((100, 100))))) == ImageProblem(
        file="small.jpg", error="is 100×100 pixels; photos must be at least 512×512"
    )


class NonSeekable(io.RawIOBase):
    """A pipe-like stream: readable, not seekable."""

    def __init__(self, data: bytes) -> None:
        self._inner = io.BytesIO(data)

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def readinto(self, buffer: bytearray | memoryview) -> int:  # type: ignore[override]
        chunk = self._inner.read(len(buffer))
        buffer[: len(chunk)] = chunk
        return len(chunk)


# --- check_image: rejected files -------------------------------------------------------------


def test_truncated_jpeg_is_corrupt() -> None:
    data = jpeg()
    assert error_of("cut.jpg", data[: len(data) // 2]) == CORRUPT


def test_truncated_png_is_corrupt() -> None:
    data = encode(noise((600, 600)), "PNG")
    assert error_of("cut.png", data[: len(data) // 2]) == CORRUPT


def test_truncated_webp_is_corrupt() -> None:
    data = encode(noise((600, 600)), "WEBP", quality=80)
    assert error_of("cut.webp", data[: len(data) // 2]) == CORRUPT


def test_jpeg_magic_with_garbage_body_is_corrupt() -> None:
    assert error_of("fake.jpg", b"\xff\xd8\xff\xe0" + random.Random(1).randbytes(5000)) == CORRUPT


def test_wrong_magic_bytes_are_unreadable() -> None:
    data = bytearray(encode(noise((600, 600)), "PNG"))
    data[0:4] = b"\x00\x00\x00\x00"
    assert error_of("photo.png", bytes(data)) == UNREADABLE


def test_text_file_named_jpg_is_unreadable() -> None:
    assert error_of("notes.jpg", b"Dear customer,\nthis is plainly text.\n" * 20) == UNREADABLE


def test_empty_file() -> None:
    assert error_of("empty.jpg", b"") == "is an empty file"


@pytest.mark.parametrize(
    ("fmt", "expected"),
    [
        ("GIF", f"is a GIF; please upload {SUPPORTED}"),
        ("TIFF", f"is a TIFF; please upload {SUPPORTED}"),
        ("BMP", f"is a BMP; please upload {SUPPORTED}"),
        ("AVIF", f"is an AVIF; please upload {SUPPORTED}"),
    ],
)
def test_other_image_formats_are_named(fmt: str, expected: str) -> None:
    assert error_of("photo.jpg", encode(noise((600, 600)), fmt)) == expected


@pytest.mark.parametrize(
    ("size", "expected"),
    [
        ((300, 300), "is 300×300 pixels; photos must be at least 512×512"),
        ((1, 1), "is 1×1 pixels; photos must be at least 512×512"),
        ((100_000, 10), "is 100000×10 pixels; photos must be at least 512×512"),
        ((511, 4000), "is 511×4000 pixels; photos must be at least 512×512"),
    ],
)
def test_too_small(size: tuple[int, int], expected: str) -> None:
    assert error_of("small.png", encode(Image.new("L", size), "PNG")) == expected


def test_min_side_is_a_parameter() -> None:
    assert (
        error_of("p.jpg", jpeg((600, 600)), min_side=1024)
        == "is 600×600 pixels; photos must be at least 1024×1024"
    )
    assert error_of("p.png", encode(Image.new("L", (300, 300)), "PNG"), min_side=256) is None


def test_exif_rotation_is_applied_before_the_size_check() -> None:
    # Stored 800x500 but displayed 500x800 (orientation 6 = rotate 90° clockwise): too narrow.
    assert error_of("rotated.jpg", jpeg((800, 500), orientation=6)) == (
        "is 500×800 pixels; photos must be at least 512×512"
    )
    # Orientations 1-4 keep the stored width and height.
    assert error_of("flipped.jpg", jpeg((800, 500), orientation=3)) == (
        "is 800×500 pixels; photos must be at least 512×512"
    )


@pytest.fixture
def pillow_must_not_open(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any Image.open call fail loudly: proves a limit was enforced from our own header parse."""

    def refuse(*args: object, **kwargs: object) -> Image.Image:
        raise AssertionError("Image.open must not be reached")

    monkeypatch.setattr(Image, "open", refuse)


@pytest.mark.usefixtures("pillow_must_not_open")
def test_decompression_bomb_png_is_rejected_from_its_header() -> None:
    assert error_of("bomb.png", png_header_only(100_000, 100_000)) == (
        "is too large (10,000 megapixels; the limit is 50)"
    )


@pytest.mark.usefixtures("pillow_must_not_open")
def test_pixel_limit_below_pillows_own_guard() -> None:
    # 56 MP: Pillow would happily open this, our limit must still reject it before decoding.
    assert error_of("big.png", png_header_only(8000, 7000)) == "is too large (56 megapixels; the limit is 50)"
    assert (
        error_of("big.png", png_header_only(7072, 7072)) == "is too large (50.1 megapixels; the limit is 50)"
    )


def test_pixel_limit_is_a_parameter() -> None:
    assert error_of("p.jpg", jpeg((600, 600)), max_pixels=200_000) == (
        "is too large (0.4 megapixels; the limit is 0.2)"
    )


def test_header_under_the_limit_with_a_lying_body_is_corrupt() -> None:
    assert error_of("liar.png", png_header_only(6000, 6000)) == CORRUPT


@pytest.mark.usefixtures("pillow_must_not_open")
def test_pixel_limit_above_pillows_guard_is_capped() -> None:
    # Pillow refuses > 2 * MAX_IMAGE_PIXELS (about 179 MP) whatever we allow; say so honestly.
    assert error_of("bomb.png", png_header_only(20_000, 20_000), max_pixels=10**9) == (
        "is too large (400 megapixels; the limit is 179)"
    )


@pytest.mark.usefixtures("pillow_must_not_open")
def test_jpeg_bomb_is_rejected_from_its_frame_header() -> None:
    assert error_of("bomb.jpg", jpeg_with_frame_size(60_000, 60_000)) == (
        "is too large (3,600 megapixels; the limit is 50)"
    )


@pytest.mark.usefixtures("pillow_must_not_open")
def test_webp_bombs_are_rejected_from_their_headers() -> None:
    expected = "is too large (268.5 megapixels; the limit is 50)"
    # Extended format (VP8X canvas, used when there is alpha or metadata): 24-bit sizes minus one.
    extended = bytearray(encode(Image.new("RGBA", (16, 16)), "WEBP", quality=80))
    assert extended[12:16] == b"VP8X"
    extended[24:30] = (16383).to_bytes(3, "little") * 2
    assert error_of("bomb.webp", bytes(extended)) == expected
    # Lossless (VP8L): two 14-bit sizes minus one packed after the signature byte.
    lossless = bytearray(encode(Image.new("RGB", (16, 16)), "WEBP", lossless=True))
    assert lossless[12:16] == b"VP8L"
    bits = int.from_bytes(lossless[21:25], "little") & ~((1 << 28) - 1)
    lossless[21:25] = (bits | 16383 | (16383 << 14)).to_bytes(4, "little")
    assert error_of("bomb.webp", bytes(lossless)) == expected
    # Lossy (VP8 key frame): 14-bit sizes plus 2 scale bits each.
    lossy = bytearray(encode(Image.new("RGB", (16, 16)), "WEBP", quality=80))
    assert lossy[12:16] == b"VP8 "
    lossy[26:30] = (16383).to_bytes(2, "little") * 2
    assert error_of("bomb.webp", bytes(lossy)) == expected


@needs_heic_encoder
@pytest.mark.usefixtures("pillow_must_not_open")
def test_heic_size_comes_from_the_header() -> None:
    # A HEIC larger than the limit is rejected before libheif decodes it.
    assert error_of("big.heic", heic((700, 600)), max_pixels=400_000) == (
        "is too large (0.5 megapixels; the limit is 0.4)"
    )


def test_animated_png_and_webp_are_rejected() -> None:
    frames = [noise((600, 600), seed=i) for i in range(3)]
    for fmt in ("PNG", "WEBP"):
        data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100)
        assert error_of(f"anim.{fmt.lower()}", data) == "is an animated image; please upload a still photo"


def test_huge_metadata_is_fine() -> None:
    # 1 MiB ICC profile (split over many APP2 segments) plus a 60 KiB EXIF block.
    junk_icc = random.Random(2).randbytes(1 << 20)
    exif = Image.Exif()
    exif[0x010E] = "x" * 60_000  # ImageDescription
    data = encode(noise((600, 600)), "JPEG", icc_profile=junk_icc, exif=exif.tobytes())
    assert len(data) > 1 << 20
    assert check_image("meta.jpg", data) is None
    # A 4 MiB tEXt chunk in a PNG.
    png = with_png_chunk(encode(noise((600, 600)), "PNG"), b"tEXt", b"Comment\x00" + b"y" * (4 << 20))
    assert check_image("meta.png", png) is None
    assert len(normalise_image(data)) < 300_000


def test_compressed_text_bomb_is_rejected() -> None:
    bomb = b"Comment\x00\x00" + zlib.compress(b"z" * (64 << 20), 9)
    png = with_png_chunk(encode(noise((600, 600)), "PNG"), b"zTXt", bomb)
    assert error_of("ztxt.png", png) == CORRUPT


def test_hostile_inputs_never_raise() -> None:
    rng = random.Random(3)
    seeds = [jpeg((520, 520)), encode(noise((520, 520)), "PNG"), encode(noise((520, 520)), "WEBP")]
    for seed in seeds:
        for _ in range(40):
            data = bytearray(seed)
            for _ in range(rng.randint(1, 20)):
                data[rng.randrange(len(data))] = rng.randrange(256)
            problem = check_image("fuzz", bytes(data))
            assert problem is None or problem.file == "fuzz"


def test_refuses_to_run_with_truncated_loading_enabled(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
    with pytest.raises(RuntimeError, match="LOAD_TRUNCATED_IMAGES"):
        check_image("x.jpg", jpeg())


def test_problem_renders_as_a_sentence() -> None:
    problem = check_image("holiday.jpg", b"")
    assert problem is not None
    assert str(problem) == "holiday.jpg is an empty file"
    assert problem.model_dump() == {"file": "holiday.jpg", "error": "is an empty file"}


# --- normalise_image / image_size ------------------------------------------------------------


def open_jpeg(data: bytes) -> Image.Image:
    """Decode normalised output and check it is a baseline JPEG without metadata."""
    assert data[:3] == b"\xff\xd8\xff"
    im = Image.open(io.BytesIO(data))
    im.load()
    assert im.format == "JPEG"
    assert im.mode == "RGB"
    assert "progressive" not in im.info
    assert "progression" not in im.info
    assert "exif" not in im.info
    assert "icc_profile" not in im.info
    assert b"\xff\xc0" in data  # SOF0: baseline DCT
    assert b"Exif\x00\x00" not in data
    return im


def test_normalise_caps_the_longest_side_keeping_aspect() -> None:
    data = normalise_image(jpeg((4000, 3000)))
    assert open_jpeg(data).size == (1024, 768)
    assert len(data) < 600_000
    assert open_jpeg(normalise_image(jpeg((900, 3000)), max_side=600)).size == (180, 600)


def test_normalise_keeps_small_images_at_their_size() -> None:
    assert open_jpeg(normalise_image(jpeg((600, 520)))).size == (600, 520)


def test_normalise_applies_exif_orientation_and_strips_exif() -> None:
    # Left half black, right half white; orientation 6 means "rotate 90° clockwise to display".
    im = Image.new("L", (800, 600), 0)
    im.paste(255, (400, 0, 800, 600))
    exif = Image.Exif()
    exif[0x0112] = 6
    exif[0x010F] = "Camera Maker"
    out = open_jpeg(normalise_image(encode(im.convert("RGB"), "JPEG", exif=exif.tobytes())))
    assert out.size == (600, 800)
    top, bottom = out.getpixel((300, 100)), out.getpixel((300, 700))
    assert isinstance(top, tuple)
    assert isinstance(bottom, tuple)
    # After a clockwise turn the stored left (black) half is on top.
    assert max(top) < 30
    assert min(bottom) > 225
    assert not out.getexif()


def test_normalise_strips_every_kind_of_metadata() -> None:
    exif = Image.Exif()
    exif[0x010F] = "SecretCamera"
    exif[0x8825] = {2: (51.0, 30.0, 0.0)}  # GPS latitude
    data = encode(
        noise((600, 600)),
        "JPEG",
        exif=exif.tobytes(),
        comment=b"secret comment",
        xmp=b"<x:xmpmeta>secret xmp</x:xmpmeta>",
        icc_profile=ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes(),
    )
    out = normalise_image(data)
    open_jpeg(out)
    for marker in (b"SecretCamera", b"secret comment", b"secret xmp", b"ICC_PROFILE", b"Exif\x00\x00"):
        assert marker not in out


def test_normalise_cmyk_becomes_rgb() -> None:
    cmyk = Image.new("CMYK", (600, 600), (0, 255, 255, 0))  # pure red ink
    px = open_jpeg(normalise_image(encode(cmyk, "JPEG"))).getpixel((300, 300))
    assert isinstance(px, tuple)
    assert px[0] > 200
    assert px[1] < 60
    assert px[2] < 60


def test_normalise_16_bit_png_scales_instead_of_clipping() -> None:
    px = open_jpeg(normalise_image(encode(Image.new("I;16", (600, 600), 40000), "PNG"))).getpixel((10, 10))
    assert isinstance(px, tuple)
    assert all(abs(c - 40000 // 256) <= 2 for c in px)


def test_normalise_composites_alpha_on_white() -> None:
    rgba = Image.new("RGBA", (600, 600), (255, 0, 0, 0))  # fully transparent red
    rgba.paste((0, 0, 255, 255), (0, 0, 300, 600))  # opaque blue left half
    out = open_jpeg(normalise_image(encode(rgba, "PNG")))
    left, right = out.getpixel((100, 300)), out.getpixel((500, 300))
    assert isinstance(left, tuple)
    assert isinstance(right, tuple)
    assert left[2] > 200
    assert left[0] < 40
    assert min(right) > 245


def test_normalise_palette_with_transparency() -> None:
    pal = Image.new("P", (600, 600), 0)
    pal.putpalette([0, 0, 0, 0, 255, 0] + [0] * (254 * 3))
    pal.paste(1, (0, 0, 300, 600))
    out = open_jpeg(normalise_image(encode(pal, "PNG", transparency=0)))
    right = out.getpixel((500, 300))
    left = out.getpixel((100, 300))
    assert isinstance(right, tuple)
    assert isinstance(left, tuple)
    assert min(right) > 245  # transparent index composited on white
    assert left[1] > 200


def test_normalise_converts_icc_profiles_to_srgb() -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    data = encode(Image.new("RGB", (600, 600), (10, 200, 30)), "JPEG", icc_profile=srgb)
    px = open_jpeg(normalise_image(data)).getpixel((5, 5))
    assert isinstance(px, tuple)
    assert abs(px[1] - 200) < 10
    # Junk profiles are ignored rather than rejecting the photo.
    junk = encode(Image.new("RGB", (600, 600), (10, 200, 30)), "JPEG", icc_profile=b"not an icc profile")
    assert open_jpeg(normalise_image(junk)).size == (600, 600)


@needs_heic_encoder
def test_normalise_heic() -> None:
    assert open_jpeg(normalise_image(heic((1600, 1200)))).size == (1024, 768)


def test_normalise_accepts_paths(tmp_path: Path) -> None:
    path = tmp_path / "in.webp"
    path.write_bytes(encode(noise((2000, 1000)), "WEBP"))
    assert open_jpeg(normalise_image(path, max_side=500, quality=70)).size == (500, 250)


def test_image_size_reads_real_dimensions(tmp_path: Path) -> None:
    assert image_size(encode(Image.new("RGB", (640, 480)), "PNG")) == (640, 480)
    path = tmp_path / "out.webp"
    path.write_bytes(encode(Image.new("RGB", (1024, 576)), "WEBP"))
    assert image_size(path) == (1024, 576)

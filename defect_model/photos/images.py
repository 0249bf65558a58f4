"""Reading photos safely and shaping them for the network (no torch here).

Every failure a user can cause becomes an ImageError that names the file and
says what to do.
"""

from __future__ import annotations

import io
import math
import struct
from pathlib import Path
from typing import Union

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".gif")  # a GIF: its first frame
# A photo larger than this is refused before it is decoded (decompression bombs).
MAX_PIXELS = 64_000_000
# The most memory one photo's pixels may take, decoded and as the RGB copy handed on: width x height x
# bytes per pixel of its mode, so a 16-bit photo counts twice an 8-bit one. A larger JPEG is decoded at
# 1/2, 1/4 or 1/8 scale; any other photo that fits when decoded is reduced before it is converted, and
# one that does not fit even then is refused. Every use here (the network's input, thumbnails, overlays
# up to 2048 px) needs far fewer pixels than this allows.
MAX_DECODED_BYTES = 128 * 1024**2
_BYTES_PER_PIXEL = {"1": 1, "L": 1, "P": 1, "LA": 2, "La": 2, "PA": 2, "I;16": 2, "I;16B": 2, "I;16L": 2, "I;16N": 2,
                    "RGB": 3, "YCbCr": 3, "LAB": 3, "HSV": 3}  # any other mode: 4 (RGBA, CMYK, I, F)

ImageSource = Union[str, Path, bytes, Image.Image, np.ndarray]


class ImageError(ValueError):
    """A photo that cannot be used; the message names it and says what to do."""

    def __init__(self, name: str, problem: str, advice: str):
        self.name = name
        self.problem = problem
        self.advice = advice
        super().__init__(f"{name}: {problem}. {advice}")


def is_image_name(name: str | Path) -> bool:
    return Path(name).suffix.lower() in IMAGE_EXTENSIONS


def describe_source(source: ImageSource, name: str | None = None) -> str:
    if name:
        return name
    if isinstance(source, (str, Path)):
        return str(source)
    return f"<{type(source).__name__}>"


def load_image(source: ImageSource, name: str | None = None) -> Image.Image:
    """Return the photo as an 8-bit RGB PIL image with EXIF orientation applied."""
    label = describe_source(source, name)
    if isinstance(source, Image.Image):
        return _to_rgb(source, label)
    if isinstance(source, np.ndarray):
        return _to_rgb(_array_to_image(source, label), label)
    if isinstance(source, (bytes, bytearray)):
        stream = io.BytesIO(source)
    elif isinstance(source, (str, Path)):
        if not Path(source).is_file():
            raise ImageError(label, "the file does not exist", "Check the path and try again.")
        stream = source
    else:
        raise ImageError(label, f"cannot read a photo from {type(source).__name__}",
                         "Pass a file path, bytes, a PIL image or an array.")
    try:
        with Image.open(stream) as img:
            width, height = img.size
            if width * height > MAX_PIXELS:
                raise ImageError(label, f"the photo is {width}x{height} pixels, too large to inspect safely",
                                 f"Resize it below {MAX_PIXELS // 1_000_000} megapixels and upload it again.")
            if img.format == "JPEG":
                _draft_within_budget(img)
            _refuse_over_budget(img, label)
            white, how = declared_white(img, stream)
            img.load()
            img = _reduce(img, _reduction(img.size, img.mode))
            img = _to_rgb(ImageOps.exif_transpose(img), label, white)
            if how:
                img.info["depth_note"] = how  # callers say how a deep photo was brought to 8 bits
            if img.size not in ((width, height), (height, width)):
                img.info["reduced_from"] = (width, height)  # what the file holds; the callers may say so
            return img
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError(label, "this is not an image file PIL can read",
                         "Upload a JPEG, PNG, BMP, TIFF, WebP or GIF photo.") from None
    except Image.DecompressionBombError:
        raise ImageError(label, "the photo is too large to decode safely",
                         "Resize it and upload it again.") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise ImageError(label, f"the image data is damaged or truncated ({exc})",
                         "Export the photo again from the camera or image tool.") from None


def decoded_bytes(size: tuple[int, int], mode: str) -> int:
    """Memory a photo of this size takes decoded in `mode`: width x height x bytes per pixel."""
    return size[0] * size[1] * _BYTES_PER_PIXEL.get(mode, 4)


def _reduction(size: tuple[int, int], mode: str) -> int:
    """The smallest whole factor that brings the photo, decoded and as RGB, within MAX_DECODED_BYTES."""
    need = max(decoded_bytes(size, mode), decoded_bytes(size, "RGB"))
    return max(1, math.ceil(math.sqrt(need / MAX_DECODED_BYTES)))


def _draft_within_budget(img: Image.Image) -> None:
    """Let the JPEG decoder scale down while it decodes (1/2, 1/4 or 1/8), as far as the budget needs."""
    factor = _reduction(img.size, img.mode)
    if factor > 1:
        img.draft(img.mode, (math.ceil(img.width / factor), math.ceil(img.height / factor)))


def _refuse_over_budget(img: Image.Image, label: str) -> None:
    need = decoded_bytes(img.size, img.mode)
    if need > MAX_DECODED_BYTES:
        most = MAX_DECODED_BYTES // _BYTES_PER_PIXEL.get(img.mode, 4) / 1e6
        raise ImageError(label, f"the photo is {img.width}x{img.height} {img.mode} and would take "
                                f"{need / 1024**2:.1f} MB decoded, more than the {MAX_DECODED_BYTES / 1024**2:.0f} MB "
                                "allowed per photo",
                         f"Resize it below {most:.0f} megapixels (or save it as JPEG) and upload it again.")


def _reduce(img: Image.Image, factor: int) -> Image.Image:
    if factor == 1:
        return img
    try:
        return img.reduce(factor)
    except ValueError:  # 1-bit, palette and 16-bit modes: Pillow reduces them by resizing
        return img.resize((max(1, img.width // factor), max(1, img.height // factor)), Image.BOX)


_DEEP_MODES = ("I;16", "I;16B", "I;16L", "I;16N", "I")
# A PNG's chunks before its pixels are few and small; this many are read at most looking for sBIT.
_PNG_HEADER_CHUNKS = 64


def declared_white(img: Image.Image, stream) -> tuple[int | None, str]:
    """The value that is white in a deep (16- or 32-bit integer) photo, from what the file declares, and a
    sentence saying what was done; (None, "") for 8-bit photos and for those that declare nothing usable.

    A PNG's sBIT chunk (the sensor's significant bits, e.g. 12) or a TIFF's MaxSampleValue wins over the
    container's 16 bits. The PNG standard asks writers to spread such values over the full 16-bit range;
    many camera tools store them as they come (0..4095). Values above the declared maximum show the
    photo was spread, so then the full range is white."""
    if img.mode not in _DEEP_MODES:
        return None, ""
    bits, source = 16 if img.mode.startswith("I;16") else None, "the file declares 16 bits"
    if img.format == "PNG":
        significant = _png_significant_bits(stream)
        if significant and significant < 16:
            bits, source = significant, f"the {significant} bits its PNG sBIT chunk declares"
    elif img.format == "TIFF":
        declared = img.tag_v2.get(281)  # MaxSampleValue
        declared = declared[0] if isinstance(declared, tuple) else declared
        per_sample = img.tag_v2.get(258)  # BitsPerSample
        per_sample = per_sample[0] if isinstance(per_sample, tuple) else per_sample
        if declared:
            return _white_of(img, int(declared), f"the MaxSampleValue {int(declared)} its TIFF tags declare")
        if per_sample and per_sample <= 16:
            bits, source = int(per_sample), f"the file declares {int(per_sample)} bits"
    if bits is None:
        return None, ""
    return _white_of(img, 2**bits - 1, source)


def _white_of(img: Image.Image, white: int, source: str) -> tuple[int, str]:
    top = _brightest(img)
    depth = "16-bit" if img.mode.startswith("I;16") else "32-bit"
    if top > white:  # spread over the full range as the PNG standard asks
        white, source = 65535, f"its values exceed {source}, so they span all 16 bits"
    note = f"{depth} photo: scaled to 8 bits taking {white} as white ({source})"
    if top * 16 < white:
        note += (f"; its brightest pixel is {top}, {100 * top / white:.1f} % of white, so it looks dark. If the "
                 "camera records fewer bits, save its photos with a PNG sBIT chunk or TIFF MaxSampleValue")
    return white, note


def _brightest(img: Image.Image) -> int:
    extrema = img.getextrema()  # loads the pixels, without a copy of them
    return int(max(pair[1] for pair in extrema) if isinstance(extrema[0], tuple) else extrema[1])


def _png_significant_bits(stream) -> int | None:
    """The largest channel value of a PNG's sBIT chunk, read from the chunk headers before its pixels."""
    own = isinstance(stream, (str, Path))
    handle = open(stream, "rb") if own else stream
    try:
        start = handle.tell()
        handle.seek(0)
        if handle.read(8) != b"\x89PNG\r\n\x1a\n":
            return None
        for _ in range(_PNG_HEADER_CHUNKS):
            head = handle.read(8)
            if len(head) < 8:
                return None
            length, kind = struct.unpack(">I4s", head)
            if kind in (b"IDAT", b"IEND"):
                return None
            if kind == b"sBIT" and 1 <= length <= 4:
                return max(handle.read(length))
            handle.seek(length + 4, io.SEEK_CUR)  # the data and its CRC
        return None
    finally:
        if own:
            handle.close()
        else:
            handle.seek(start)


def _array_to_image(array: np.ndarray, label: str) -> Image.Image:
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    if array.ndim not in (2, 3) or (array.ndim == 3 and array.shape[2] not in (3, 4)):
        raise ImageError(label, f"an array of shape {array.shape} is not a photo",
                         "Pass an HxW, HxWx3 or HxWx4 array.")
    if array.dtype != np.uint8:
        array = _scale_to_uint8(array)
    return Image.fromarray(array)


def _scale_to_uint8(values: np.ndarray, white: int | None = None) -> np.ndarray:
    """Map integer or float pixel data to 0..255: `white` (what the file declares) becomes 255; without it,
    a 16-bit array's 65535, else data up to 1.0, 255 or 65535 by its largest value (never clipped to white)."""
    if white is None and values.dtype == np.uint16:
        white = 65535
    if white is None:
        top = float(values.max()) if values.size else 0.0
        white = 1.0 if top <= 1.0 else 255.0 if top <= 255.0 else 65535.0
    scale = 255.0 / white
    if values.dtype.kind == "u" and values.dtype.itemsize == 2:
        # A table of all 65,536 values: no floating-point copy of the photo (8 bytes a pixel, several times over).
        table = np.clip(np.rint(np.arange(65536) * scale), 0, 255).astype(np.uint8)
        return table[values]
    scaled = values.astype(np.float32) * np.float32(scale)
    np.rint(scaled, out=scaled)
    return np.clip(scaled, 0, 255, out=scaled).astype(np.uint8)


def _to_rgb(img: Image.Image, label: str, white: int | None = None) -> Image.Image:
    if img.mode == "RGB":
        return img
    if img.mode in (*_DEEP_MODES, "F"):
        return Image.fromarray(_scale_to_uint8(np.asarray(img), white)).convert("RGB")
    if img.mode == "P" and "transparency" in img.info:
        img = img.convert("RGBA")
    try:
        return img.convert("RGB")
    except (ValueError, OSError) as exc:
        raise ImageError(label, f"pixel format {img.mode} cannot be converted to RGB ({exc})",
                         "Save the photo as an 8-bit RGB or grayscale image.") from None


def fit_to_square(img: Image.Image, size: int, mode: str = "stretch") -> Image.Image:
    """Resize to size x size: stretch, pad (letterbox, keeps aspect) or centre-crop."""
    if mode == "stretch":
        return img.resize((size, size), Image.BILINEAR)
    width, height = img.size
    if mode == "pad":
        scale = size / max(width, height)
        new = img.resize((max(1, round(width * scale)), max(1, round(height * scale))), Image.BILINEAR)
        canvas = Image.new("RGB", (size, size), (0, 0, 0))
        canvas.paste(new, ((size - new.width) // 2, (size - new.height) // 2))
        return canvas
    if mode == "crop":
        scale = size / min(width, height)
        new = img.resize((max(size, round(width * scale)), max(size, round(height * scale))), Image.BILINEAR)
        left, top = (new.width - size) // 2, (new.height - size) // 2
        return new.crop((left, top, left + size, top + size))
    raise ValueError(f"unknown resize mode {mode!r}")


def prepare_array(source: ImageSource, size: int, mode: str = "stretch", name: str | None = None) -> np.ndarray:
    """Load a photo and return it as a size x size x 3 uint8 array, ready for the network."""
    return np.asarray(fit_to_square(load_image(source, name), size, mode), dtype=np.uint8)

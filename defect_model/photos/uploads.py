"""Uploaded files before inspection: zips expanded into their photos, formats sniffed, sizes bounded, and
each file's problems said in plain words."""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from PIL import Image

from defect_model.photos.archives import ArchiveError, read_zip_members
from defect_model.photos.images import IMAGE_EXTENSIONS, MAX_DECODED_BYTES, ImageError

# The largest photo file inspected (and kept). A bigger one could not be decoded within the memory a photo may
# take anyway (images.MAX_DECODED_BYTES: a file's pixels decode to at least its size, except a JPEG's), so it is
# refused before it is decoded or copied.
MAX_PHOTO_BYTES = MAX_DECODED_BYTES

_FORMAT_EXTENSIONS = {"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp", "TIFF": ".tif", "WEBP": ".webp", "GIF": ".gif"}
_EXPECTED_FORMAT = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".tif": "TIFF",
                    ".tiff": "TIFF", ".webp": "WEBP", ".gif": "GIF"}


@dataclass
class Upload:
    """One file to inspect; `problem` is set when it is known to be unusable before decoding."""

    name: str
    data: bytes
    problem: str = ""


def expand_uploads(files: Iterable[tuple[str, bytes]]) -> list[Upload]:
    """Uploaded (name, bytes) files with every .zip replaced by its members (named zip/member).

    A zip that cannot be read safely stays as one upload with the reason; it never
    stops the other files.
    """
    out: list[Upload] = []
    for name, data in files:
        if Path(name).suffix.lower() != ".zip":
            out.append(Upload(name, data))
            continue
        try:
            members = read_zip_members(data, name)
        except ArchiveError as exc:
            out.append(Upload(name, data, str(exc)))
            continue
        except Exception as exc:  # a reader bug must not stop the other files either
            out.append(Upload(name, data, f"{name}: the zip could not be read ({type(exc).__name__}: {exc}). "
                                          "Create the zip again, or upload the photos themselves."))
            continue
        if not members:
            out.append(Upload(name, data, f"{name}: the zip holds no files. Zip the photos themselves and upload "
                                          "it again."))
        for member, content in members:
            member_name = f"{name}/{member}"
            if Path(member).suffix.lower() == ".zip":
                out.append(Upload(member_name, content, f"{member_name}: a zip inside a zip is not opened. "
                                                        "Upload the inner zip on its own."))
            else:
                out.append(Upload(member_name, content))
    return out


def sniff_format(data: bytes) -> str | None:
    """The image format PIL recognises in the header (JPEG, PNG, ...), without decoding pixels."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.format
    except Exception:  # any failure just means "not a recognisable image header"
        return None


def check_upload(name: str, data: bytes) -> list[str]:
    """Refuse a name without a photo extension (ImageError); notes on how an accepted photo is read."""
    suffix = Path(name).suffix.lower()
    if suffix not in IMAGE_EXTENSIONS:
        found = sniff_format(data)
        kind = f"'{suffix}'" if suffix else "a name without an extension"
        if found in _FORMAT_EXTENSIONS:
            advice = (f"It looks like a {found} photo: rename it to {Path(name).stem}{_FORMAT_EXTENSIONS[found]} "
                      "and upload it again.")
        else:
            advice = "Upload JPEG, PNG, BMP, TIFF, WebP or GIF photos, or a .zip of them."
        raise ImageError(name, f"{kind} is not a photo type this page reads", advice)
    if not data:
        raise ImageError(name, "the file is empty", "Upload the photo again; the copy may not have finished.")
    return photo_notes(name, data)


def photo_notes(name: str, data: bytes) -> list[str]:
    """What the inspector should know about how this photo was read (format, alpha, bit depth, CMYK)."""
    try:
        with Image.open(io.BytesIO(data)) as img:
            found, mode, info = img.format, img.mode, dict(img.info)
            frames = getattr(img, "n_frames", 1)
    except Exception:
        return []  # decoding reports the real problem
    notes = []
    expected = _EXPECTED_FORMAT.get(Path(name).suffix.lower())
    if found and expected and found != expected:
        notes.append(f"named {Path(name).suffix} but it is a {found} file; inspected by its content")
    if mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in info:
        notes.append("has an alpha channel; transparency was ignored and the photo inspected as opaque")
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        notes.append("16-bit photo scaled to 8 bits per channel")
    if mode == "CMYK":
        notes.append("CMYK photo converted to RGB")
    if frames > 1:
        notes.append(f"has {frames} frames (an animation); its first frame was inspected")
    return notes


# -- inspecting a batch ---------------------------------------------------------------
def check_size(name: str, size_bytes: int, limit: int | None = None) -> None:
    """Refuse (ImageError) a file larger than a photo may be."""
    limit = MAX_PHOTO_BYTES if limit is None else limit
    if size_bytes > limit:
        raise ImageError(name, f"the file is {size_bytes / 1024**2:.0f} MB, more than the {limit / 1024**2:.0f} MB a "
                               "photo may be", "Save it as JPEG, or resize it, and upload it again.")

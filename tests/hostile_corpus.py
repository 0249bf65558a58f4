"""Broken and hostile photos, zips and folders, built in memory by the tests (no binary files in git).

`raw_zip` writes the zip format by hand, so a test can make what zipfile refuses to write: encrypted or
Deflate64 flags, a wrong CRC, names that claim UTF-8 and are not, and 300,000 members in a second.
"""

from __future__ import annotations

import functools
import io
import os
import stat
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from defect_model.photos.synthetic import make_sample

# -- photos ---------------------------------------------------------------------------------------


def encode(image: Image.Image, fmt: str = "PNG", **options) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def photo(label: str = "pit", seed: int = 0, size: int = 64, fmt: str = "PNG") -> bytes:
    """A synthetic product photo, as the demo dataset holds."""
    return encode(make_sample(label, np.random.default_rng(seed), size)[0], fmt)


def png_header_only(width: int, height: int, bit_depth: int = 8, colour_type: int = 0) -> bytes:
    """A tiny PNG whose header claims a huge photo (a decompression bomb)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


@functools.lru_cache(maxsize=4)  # a second or two each: the corpus asks for it more than once
def sixteen_bit_png(width: int, height: int) -> bytes:
    """A 16-bit grayscale PNG (a few hundred KB for 8000x7999: it compresses to almost nothing)."""
    return encode(Image.new("I;16", (width, height), 1000))


def exif_rotated_jpeg() -> bytes:
    """A 40x20 JPEG that says 'rotate 90 degrees' in its EXIF: it is shown (and inspected) as 20x40."""
    exif = Image.Exif()
    exif[0x0112] = 6
    return encode(make_sample("ok", np.random.default_rng(4), 64)[0].resize((40, 20)), "JPEG", exif=exif.tobytes())


def palette_with_transparency() -> bytes:
    image = make_sample("crack", np.random.default_rng(6), 64)[0].convert("P", palette=Image.ADAPTIVE, colors=16)
    image.info["transparency"] = 0
    return encode(image, transparency=0)


# -- zips -----------------------------------------------------------------------------------------

_LOCAL = struct.Struct("<4s5H3L2H")
_CENTRAL = struct.Struct("<4s6H3L5H2L")
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_LOCATOR = struct.Struct("<4sLQL")
UTF8_NAMES = 0x800
ENCRYPTED = 0x1
DEFLATE64 = 9


@dataclass
class Member:
    """One zip member as written: name bytes, stored (or pre-compressed) bytes and header fields."""

    name: bytes
    data: bytes = b""
    flags: int = 0
    method: int = 0  # 0 stored, 8 deflated, 9 Deflate64
    size: int | None = None  # uncompressed size; default len(data)
    crc: int | None = None  # default: the right CRC of data
    mode: int = 0  # unix st_mode for the external attributes (links)


def raw_zip(members: list[Member]) -> bytes:
    """The zip format written by hand (ZIP64 end records when there are more than 65,535 members)."""
    local, central, offset = [], [], 0
    for m in members:
        crc = zlib.crc32(m.data) if m.crc is None else m.crc
        size = len(m.data) if m.size is None else m.size
        header = _LOCAL.pack(b"PK\x03\x04", 20, m.flags, m.method, 0, 0x21, crc, len(m.data), size, len(m.name), 0)
        local.append(header + m.name + m.data)
        central.append(_CENTRAL.pack(b"PK\x01\x02", 0x0314, 20, m.flags, m.method, 0, 0x21, crc, len(m.data), size,
                                     len(m.name), 0, 0, 0, 0, m.mode << 16, offset) + m.name)
        offset += len(header) + len(m.name) + len(m.data)
    directory = b"".join(central)
    count = len(members)
    tail = b""
    if count > 0xFFFF:
        tail = (_END64.pack(b"PK\x06\x06", _END64.size - 12, 45, 45, 0, 0, count, count, len(directory), offset)
                + _END64_LOCATOR.pack(b"PK\x06\x07", 0, offset + len(directory), 1))
        count = 0xFFFF
    return (b"".join(local) + directory + tail
            + _END.pack(b"PK\x05\x06", 0, 0, count, count, len(directory), offset, 0))


def deflated(data: bytes) -> bytes:
    """Raw deflate, as inside a zip member."""
    packer = zlib.compressobj(9, zlib.DEFLATED, -15)
    return packer.compress(data) + packer.flush()


@functools.lru_cache(maxsize=4)
def many_members_zip(count: int) -> bytes:
    """`count` empty members: the member-count bomb."""
    return raw_zip([Member(b"f%d.png" % i) for i in range(count)])


@functools.lru_cache(maxsize=4)
def small_members_bomb(count: int, member_bytes: int = 1024**2) -> bytes:
    """`count` members of `member_bytes` zeros each, every one under any per-member size limit."""
    zeros = b"\0" * member_bytes
    body, crc = deflated(zeros), zlib.crc32(zeros)
    return raw_zip([Member(b"ok/%05d.bmp" % i, body, method=8, size=member_bytes, crc=crc) for i in range(count)])


def class_zip(prefix: str = "", separator: str = "/", per_class: int = 3) -> bytes:
    """A small dataset zip: classes ok and pit, `per_class` photos each."""
    members = []
    for label in ("ok", "pit"):
        for i in range(per_class):
            name = separator.join(part for part in (prefix, label, f"{i}.png") if part)
            members.append(Member(name.encode(), photo(label, i)))
    return raw_zip(members)


# -- folders ----------------------------------------------------------------------------------------


def class_folder(root: Path, classes=("ok", "pit"), per_class: int = 3) -> Path:
    """root/<class>/<i>.png: a trainable dataset folder."""
    for label in classes:
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (root / label / f"{i}.png").write_bytes(photo(label, i))
    return root


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    assert stat.S_ISFIFO(path.lstat().st_mode)
    return path


def cmyk_jpeg() -> bytes:
    return encode(Image.new("CMYK", (60, 60), (10, 200, 30, 0)), "JPEG")


def grayscale_png() -> bytes:
    return encode(make_sample("pit", np.random.default_rng(7), 64)[0].convert("L"))


def sixteen_bit_small_png() -> bytes:
    return encode(Image.fromarray(np.linspace(0, 60000, 64 * 64).reshape(64, 64).astype(np.uint16)))


def twelve_bit_png_with_sbit() -> bytes:
    """A line camera's 12-bit frame stored as it comes (0..4095) in a 16-bit PNG that declares 12 bits."""
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([12]))
    return encode(Image.fromarray(np.linspace(0, 4095, 64 * 64).reshape(64, 64).astype(np.uint16)), pnginfo=info)


def one_pixel_png() -> bytes:
    return encode(Image.new("RGB", (1, 1), (128, 64, 32)))


def truncated(data: bytes) -> bytes:
    return data[: len(data) // 2]


def png_magic_then_garbage() -> bytes:
    return b"\x89PNG\r\n\x1a\n" + b"\x00garbage" * 20


def symlink_member_zip() -> bytes:
    return raw_zip([Member(b"ok/a.png", photo()), Member(b"ok/link.png", b"/etc/passwd", mode=stat.S_IFLNK | 0o777)])


def nested_zip() -> bytes:
    inner = raw_zip([Member(b"inner/b.png", photo("ok", 2))])
    return raw_zip([Member(b"a.png", photo("pit", 1)), Member(b"inner.zip", inner)])


def cp437_names_zip() -> bytes:
    """Names in the old DOS code page, without the UTF-8 flag (as old Windows tools write them)."""
    return raw_zip([Member("übersicht-ä.png".encode("cp437"), photo("ok", 3))])


def hidden_files_zip() -> bytes:
    return raw_zip([Member(b"a.png", photo("ok", 4)), Member(b"__MACOSX/._a.png", b"\0\x05\x16\x07"),
                    Member(b".DS_Store", b"\0\0\0\1Bud1")])


def animated_gif() -> bytes:
    """A GIF of three frames (a camera's or a tool's animation): the first frame is the photo."""
    frames = [make_sample(label, np.random.default_rng(4), 64)[0].convert("P") for label in ("crack", "ok", "pit")]
    out = io.BytesIO()
    frames[0].save(out, "GIF", save_all=True, append_images=frames[1:], duration=100)
    return out.getvalue()

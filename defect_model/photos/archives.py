"""Reading uploaded .zip files safely: no paths outside the target, no links, bounded size and count.

Everything is checked from the central directory before a byte is extracted, and every way a zip can
be unusable (damaged, encrypted, compressed in a way Python cannot read, names that are not text)
becomes an ArchiveError that names the zip and says what to do.
"""

from __future__ import annotations

import io
import shutil
import stat
import struct
import tempfile
import zipfile
import zlib
from pathlib import Path, PurePosixPath

MAX_FILES = 20_000
MAX_TOTAL_BYTES = 2 * 1024**3  # extracted to disk (a dataset for the Train page)
MAX_MEMORY_BYTES = 512 * 1024**2  # read into memory (photos for the Inspect page)
MAX_RATIO = 200  # uncompressed / compressed, for a member or the whole zip: beyond this it is a zip bomb
# Below this a zip is never called a bomb, whatever its ratio: small sets of flat test photos compress well.
BOMB_FLOOR_BYTES = 64 * 1024**2
READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
METHOD_NAMES = {9: "Deflate64", 6: "Implode", 12: "bzip2", 14: "LZMA", 93: "Zstandard", 95: "xz", 98: "PPMd",
                99: "AES encryption"}

# The records that end a zip (PKWARE APPNOTE 4.3.14-16), read to count the members without listing them.
_END = struct.Struct("<4s4H2LH")
_END64 = struct.Struct("<4sQ2H2L4Q")
_END64_LOCATOR = struct.Struct("<4sLQL")
_CENTRAL_HEADER = b"PK\x01\x02"
_MAX_COMMENT = 0xFFFF


class ArchiveError(ValueError):
    """A zip that cannot be used; the message names it and says what to do."""


def _central_directory(data: bytes) -> tuple[int, int] | None:
    """(start, end) of the central directory's bytes, found the way zipfile finds them; None without an end record."""
    end = data.rfind(b"PK\x05\x06", max(0, len(data) - _END.size - _MAX_COMMENT))
    if end < 0 or len(data) - end < _END.size:
        return None
    size = _END.unpack_from(data, end)[5]
    locator = end - _END64_LOCATOR.size
    if locator >= 0 and data.startswith(b"PK\x06\x07", locator):
        end = locator - _END64.size
        if end < 0 or not data.startswith(b"PK\x06\x06", end):
            return None
        size = _END64.unpack_from(data, end)[8]
    return max(0, end - size), end


def _count_members(data: bytes) -> int:
    """How many entries the central directory holds, counted by their signatures (no per-member objects)."""
    span = _central_directory(data)
    return 0 if span is None else data.count(_CENTRAL_HEADER, *span)


def _refuse_too_many(name: str, count: int, max_files: int) -> None:
    if count > max_files:
        raise ArchiveError(f"{name}: {count} files and folders is more than the limit of {max_files}. "
                           "Split the dataset or raise the limit.")


def _open(data: bytes, name: str, max_files: int) -> zipfile.ZipFile:
    # Listing 300,000 members takes seconds; counting their signatures first refuses such a zip at once.
    _refuse_too_many(name, _count_members(data), max_files)
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArchiveError(f"{name}: this is not a valid .zip file (damaged or another format). "
                           "Create the zip again and upload it.") from None
    except UnicodeDecodeError:
        raise ArchiveError(f"{name}: a file name inside is marked as UTF-8 but is not valid UTF-8 text. "
                           "Create the zip again (7-Zip, or zip on Linux or macOS), or rename the files with plain "
                           "names first.") from None


def member_path(info: zipfile.ZipInfo) -> PurePosixPath:
    """The member's path with Windows backslashes read as folder separators."""
    return PurePosixPath(info.filename.replace("\\", "/"))


def _is_folder(info: zipfile.ZipInfo) -> bool:
    return info.filename.endswith(("/", "\\"))


def _check_member(info: zipfile.ZipInfo, path: PurePosixPath, name: str) -> None:
    """Refuse a member that leaves the folder, is a link, is a bomb, or cannot be read here."""
    if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
        raise ArchiveError(f"{name}: member {info.filename!r} points outside the archive folder. "
                           "Zip the dataset folder itself, with relative paths.")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"{name}: member {info.filename!r} is a symbolic link; links are not accepted. "
                           "Zip real files only.")
    if info.flag_bits & 0x1:
        raise ArchiveError(f"{name}: member '{path}' is encrypted. Create the zip again without a password.")
    if info.compress_type not in READABLE_METHODS:
        method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
        raise ArchiveError(f"{name}: member '{path}' is compressed with {method}, which this server cannot read. "
                           "Create the zip again with ordinary Deflate compression (7-Zip: format zip, method "
                           "Deflate; or zip on Linux or macOS).")
    if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 10 * 1024**2:
        raise ArchiveError(f"{name}: member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}x; "
                           "this looks like a zip bomb and is refused.")


def _safe_members(archive: zipfile.ZipFile, name: str, zip_bytes: int, max_files: int,
                  max_total_bytes: int) -> list[tuple[PurePosixPath, zipfile.ZipInfo]]:
    """(path, info) of every member, folders included, once all of them passed; nothing is read yet."""
    members, total = [], 0
    for info in archive.infolist():
        path = member_path(info)
        _check_member(info, path, name)
        members.append((path, info))
        total += info.file_size
        _refuse_too_many(name, len(members), max_files)
        if total > max_total_bytes:
            raise ArchiveError(f"{name}: the files add up to more than the limit of {_size(max_total_bytes)} "
                               "uncompressed. Split the dataset into smaller zips.")
    if total > BOMB_FLOOR_BYTES and total > MAX_RATIO * zip_bytes:
        raise ArchiveError(f"{name}: {_size(zip_bytes)} would expand to {_size(total)} "
                           f"({total // max(zip_bytes, 1)}x); this looks like a zip bomb and is refused. "
                           "Photos hardly compress: zip the photo files themselves.")
    return members


def _size(n_bytes: int) -> str:
    return f"{n_bytes / 1024**2:.0f} MB" if n_bytes >= 10 * 1024**2 else f"{n_bytes / 1024**2:.2g} MB"


def _read(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: PurePosixPath, name: str, sink) -> None:
    """Copy one member into `sink`; a damaged member becomes an ArchiveError."""
    try:
        with archive.open(info) as source:
            shutil.copyfileobj(source, sink)
    except zipfile.BadZipFile as exc:
        reason = "bad CRC-32" if "CRC" in str(exc) else str(exc)
        raise ArchiveError(f"{name}: member '{path}' is damaged ({reason}). Create the zip again from the "
                           "original files and upload it again.") from None
    except (zlib.error, EOFError, RuntimeError, NotImplementedError, ValueError) as exc:
        raise ArchiveError(f"{name}: member '{path}' cannot be read ({type(exc).__name__}: {exc}). Create the zip "
                           "again with ordinary Deflate compression and no password.") from None


def _is_hidden(path: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def read_zip_members(data: bytes, name: str = "upload.zip", max_files: int = MAX_FILES,
                     max_total_bytes: int = MAX_MEMORY_BYTES) -> list[tuple[str, bytes]]:
    """(path inside the zip, bytes) for every regular file, in memory; hidden and macOS files left out."""
    with _open(data, name, max_files) as archive:
        members = _safe_members(archive, name, len(data), max_files, max_total_bytes)
        files = []
        for path, info in members:
            if _is_folder(info) or _is_hidden(path) or not path.parts:
                continue
            buffer = io.BytesIO()
            _read(archive, info, path, name, buffer)
            files.append((str(path), buffer.getvalue()))
        return files


def extract_zip(data: bytes, target: str | Path, name: str = "upload.zip", max_files: int = MAX_FILES,
                max_total_bytes: int = MAX_TOTAL_BYTES) -> Path:
    """Extract into `target` (which must not exist yet). A single top folder in the zip is unwrapped.

    The zip goes into a fresh folder of its own beside `target`, renamed to `target` once complete: a
    failed or concurrent upload never leaves files in, or takes files from, another one.
    """
    target = Path(target)
    if target.exists():
        raise ArchiveError(f"{target}: a dataset with this name exists already. Choose another name.")
    with _open(data, name, max_files) as archive:
        members = [(path, info) for path, info in _safe_members(archive, name, len(data), max_files, max_total_bytes)
                   if not _is_hidden(path) and path.parts]
        files = [path for path, info in members if not _is_folder(info)]
        if not files:
            raise ArchiveError(f"{name}: the zip holds no files. Zip the folder with one sub-folder per class.")
        tops = {path.parts[0] for path in files}
        strip = 1 if len(tops) == 1 and all(len(path.parts) > 2 for path in files) else 0
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
        try:
            for path, info in members:
                _extract_member(archive, info, path, staging, strip, name)
            _move_into_place(staging, target)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return target


def _extract_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, path: PurePosixPath, staging: Path,
                    strip: int, name: str) -> None:
    parts = path.parts[strip:]
    if not parts:
        return  # the top folder that is unwrapped
    out = staging.joinpath(*parts)
    if staging.resolve() not in out.resolve().parents:
        raise ArchiveError(f"{name}: member {info.filename!r} points outside the target folder.")
    try:
        if _is_folder(info):
            out.mkdir(parents=True, exist_ok=True)  # kept even when empty: the dataset check names it
            return
        out.parent.mkdir(parents=True, exist_ok=True)
        with open(out, "xb") as sink:
            _read(archive, info, path, name, sink)
    except (FileExistsError, NotADirectoryError, IsADirectoryError):
        raise ArchiveError(f"{name}: member '{path}' is in the zip twice, or both as a file and as a folder. "
                           "Create the zip again from the folder on disk.") from None


def _move_into_place(staging: Path, target: Path) -> None:
    try:
        staging.rename(target)
    except OSError:
        if target.exists():  # another upload with this name finished first
            raise ArchiveError(f"{target}: a dataset with this name exists already. Choose another name.") from None
        raise

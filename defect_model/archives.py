"""Reading uploaded .zip files safely: no paths outside the target, no links, bounded size and count."""

from __future__ import annotations

import io
import stat
import zipfile
from pathlib import Path, PurePosixPath

MAX_FILES = 20_000
MAX_TOTAL_BYTES = 2 * 1024**3
MAX_RATIO = 200  # uncompressed / compressed per member: beyond this it is a zip bomb


class ArchiveError(ValueError):
    """A zip that cannot be used; the message names it and says what to do."""


def _open(data: bytes, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise ArchiveError(f"{name}: this is not a valid .zip file (damaged or another format). "
                           "Create the zip again and upload it.") from None


def _safe_members(archive: zipfile.ZipFile, name: str, max_files: int, max_total_bytes: int) -> list[zipfile.ZipInfo]:
    members, total = [], 0
    for info in archive.infolist():
        if info.is_dir():
            continue
        path = PurePosixPath(info.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise ArchiveError(f"{name}: member {info.filename!r} points outside the archive folder. "
                               "Zip the dataset folder itself, with relative paths.")
        if stat.S_ISLNK(info.external_attr >> 16):
            raise ArchiveError(f"{name}: member {info.filename!r} is a symbolic link; links are not accepted. "
                               "Zip real files only.")
        if info.file_size > MAX_RATIO * max(info.compress_size, 1) and info.file_size > 10 * 1024**2:
            raise ArchiveError(f"{name}: member {info.filename!r} expands {info.file_size // max(info.compress_size, 1)}x; "
                               "this looks like a zip bomb and is refused.")
        total += info.file_size
        members.append(info)
    if len(members) > max_files:
        raise ArchiveError(f"{name}: {len(members)} files is more than the limit of {max_files}. "
                           "Split the dataset or raise the limit.")
    if total > max_total_bytes:
        raise ArchiveError(f"{name}: {total / 1024**2:.0f} MB uncompressed is more than the limit of "
                           f"{max_total_bytes / 1024**2:.0f} MB. Split the dataset.")
    return members


def _is_hidden(path: PurePosixPath) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in path.parts)


def read_zip_members(data: bytes, name: str = "upload.zip", max_files: int = MAX_FILES,
                     max_total_bytes: int = MAX_TOTAL_BYTES) -> list[tuple[str, bytes]]:
    """(path inside the zip, bytes) for every regular file, in memory; hidden and macOS files left out."""
    with _open(data, name) as archive:
        members = _safe_members(archive, name, max_files, max_total_bytes)
        return [(info.filename, archive.read(info)) for info in members
                if not _is_hidden(PurePosixPath(info.filename))]


def extract_zip(data: bytes, target: str | Path, name: str = "upload.zip", max_files: int = MAX_FILES,
                max_total_bytes: int = MAX_TOTAL_BYTES) -> Path:
    """Extract into `target` (which must not exist yet). A single top folder in the zip is unwrapped."""
    target = Path(target)
    if target.exists():
        raise ArchiveError(f"{target}: a dataset with this name exists already. Choose another name.")
    with _open(data, name) as archive:
        members = [m for m in _safe_members(archive, name, max_files, max_total_bytes)
                   if not _is_hidden(PurePosixPath(m.filename))]
        if not members:
            raise ArchiveError(f"{name}: the zip holds no files. Zip the folder with one sub-folder per class.")
        tops = {PurePosixPath(m.filename).parts[0] for m in members}
        strip = 1 if len(tops) == 1 and all(len(PurePosixPath(m.filename).parts) > 2 for m in members) else 0
        staging = target.with_name(target.name + ".partial")
        for info in members:
            parts = PurePosixPath(info.filename.replace("\\", "/")).parts[strip:]
            out = staging.joinpath(*parts)
            if staging.resolve() not in out.resolve().parents:
                raise ArchiveError(f"{name}: member {info.filename!r} points outside the target folder.")
            out.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(info) as source, open(out, "wb") as sink:
                sink.write(source.read())
        staging.rename(target)
    return target

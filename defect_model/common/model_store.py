"""The model store: where the served checkpoints (`served/<sha256>.pt`, read-only) and the active-model record
(`active.json`) live, for every dashboard server and hot-folder watcher of a plant.

`DEFECT_MODEL_STORE` names it:
  - unset: the runs root (`runs/active.json`, `runs/served/`), exactly the one-box layout;
  - a folder path: a mount every machine sees; the record is replaced atomically, a served copy is written under
    a temporary name and renamed, so a reader sees the old file or the new one, never half of one;
  - `s3://bucket/prefix`: an S3-compatible bucket through boto3 (endpoint from `DEFECT_S3_ENDPOINT_URL` for MinIO
    and the like, credentials from the usual AWS variables); a served copy is downloaded into a cache under the data
    folder (`<data>/model-store-cache/`) and checked against its sha256 before it is used.

A served copy is always named by its sha256 inside a folder named `served`, so the Predictor checks every load of
it against its name (places.pinned_sha256), on every machine, whichever store it came from.

Watchers look for a new record with `version()` (a stat of the file; for S3 an ETag, asked at most every
S3_CHECK_S seconds), not by reading it for every photo.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Protocol

from defect_model.common.durable import fsync_folder, write_atomic
from defect_model.common.places import SERVED_DIR, data_root, runs_root

STORE_ENV = "DEFECT_MODEL_STORE"
ENDPOINT_ENV = "DEFECT_S3_ENDPOINT_URL"
ACTIVE_NAME = "active.json"
S3_CHECK_S = 2.0  # how often an S3 store is asked whether the record changed (one small request)
S3_RETRY_S = 10.0  # after a failed look: how long the last record read stands before the store is asked again
CACHE_DIR = "model-store-cache"
RECORD_MODE = 0o644  # the record says which model serves: no secret, and servers may run as other users


class ModelStoreError(ValueError):
    """The store cannot be read or written, or a served copy in it is not what was made active; the message names
    the file and says what to do."""


class ModelStore(Protocol):
    location: str  # where the store is, for messages

    def put_checkpoint(self, checkpoint: Path) -> tuple[str, str]:
        """Store a read-only copy of `checkpoint` named by its sha256 (replacing a damaged one); (sha256, where)."""

    def served_path(self, sha256: str) -> Path | None:
        """A local path of the served copy, checked against `sha256` when fetched; None when the store lacks it."""

    def read_active(self) -> dict | None:
        """The active-model record, or None when no model is active."""

    def write_active(self, record: dict) -> None:
        """Replace the active-model record, whole."""

    def version(self) -> str:
        """A cheap token that changes whenever the record is replaced ('' when there is none)."""

    def active_location(self) -> str:
        """Where the record is, for messages."""


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_record(text: str | bytes) -> dict | None:
    try:
        record = json.loads(text)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None
    return record if isinstance(record, dict) else None


class FolderStore:
    """The store in a folder: the runs root (the default) or a mount every machine sees."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.location = str(self.root)

    @property
    def active_file(self) -> Path:
        return self.root / ACTIVE_NAME

    def active_location(self) -> str:
        return str(self.active_file)

    def put_checkpoint(self, checkpoint: Path) -> tuple[str, str]:
        folder = self.root / SERVED_DIR
        folder.mkdir(parents=True, exist_ok=True)
        digest = file_sha256(checkpoint)
        served = folder / f"{digest}.pt"
        if not served.is_file() or file_sha256(served) != digest:  # a damaged copy is replaced, never kept
            fd, tmp = tempfile.mkstemp(prefix=served.name + ".", suffix=".tmp", dir=folder)
            try:
                with os.fdopen(fd, "wb") as out, Path(checkpoint).open("rb") as source:
                    shutil.copyfileobj(source, out, 1 << 20)
                    out.flush()
                    os.fsync(out.fileno())
                os.chmod(tmp, 0o444)
                os.replace(tmp, served)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            fsync_folder(folder)
        return digest, str(served)

    def served_path(self, sha256: str) -> Path | None:
        served = self.root / SERVED_DIR / f"{sha256}.pt"
        return served if served.is_file() else None

    def read_active(self) -> dict | None:
        try:
            return _parse_record(self.active_file.read_text())
        except FileNotFoundError:
            return None

    def write_active(self, record: dict) -> None:
        def write(handle) -> None:
            os.fchmod(handle.fileno(), RECORD_MODE)  # the temporary file is the owner's only; other machines read it
            json.dump(record, handle, indent=2)

        self.root.mkdir(parents=True, exist_ok=True)
        write_atomic(self.active_file, write)

    def version(self) -> str:
        try:
            stat = self.active_file.stat()
        except FileNotFoundError:
            return ""
        # An atomic replace gives the record a new inode; the time and size catch an editor's in-place save.
        return f"{stat.st_ino}:{stat.st_mtime_ns}:{stat.st_size}"


class S3Store:
    """The store in an S3-compatible bucket (`s3://bucket/prefix`); served copies are used from a local cache."""

    def __init__(self, url: str, cache_root: Path | None = None, endpoint_url: str | None = None, client=None):
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        if not bucket:
            raise ModelStoreError(f"{STORE_ENV}={url}: no bucket. Give s3://BUCKET/PREFIX (the prefix may be empty).")
        self.bucket, self.prefix = bucket, prefix.strip("/")
        self.location = f"s3://{self.bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self._client = client
        name = hashlib.sha256(f"{endpoint_url or ''}|{self.location}".encode()).hexdigest()[:16]
        self.cache = Path(cache_root if cache_root is not None else data_root() / CACHE_DIR) / name / SERVED_DIR
        self._lock = threading.Lock()  # the record; downloads have their own, so a download never holds up a page
        self._fetching = threading.Lock()
        self._seen: tuple[float, str, dict | None] | None = None  # (when asked, ETag, record)
        self._checked: dict[Path, tuple[int, int]] = {}  # cached copies hashed by this process: (mtime_ns, size)

    # -- keys ---------------------------------------------------------------------------------------------------
    def _key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def _url(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    def active_location(self) -> str:
        return self._url(self._key(ACTIVE_NAME))

    @property
    def client(self):
        if self._client is None:
            import boto3  # only a plant with a bucket needs it
            from botocore.config import Config

            self._client = boto3.client("s3", endpoint_url=self.endpoint_url or None,
                                        config=Config(connect_timeout=3, read_timeout=60,
                                                      retries={"max_attempts": 2, "mode": "standard"}))
        return self._client

    def _failed(self, what: str, key: str, exc: Exception) -> ModelStoreError:
        return ModelStoreError(
            f"{self._url(key)}: the model store could not {what} ({type(exc).__name__}: {str(exc)[:300]}). Check "
            f"{STORE_ENV}, {ENDPOINT_ENV} (for MinIO and similar) and the AWS credentials (AWS_ACCESS_KEY_ID, "
            "AWS_SECRET_ACCESS_KEY or a profile), then try again.")

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in ("404", "NoSuchKey", "NotFound")

    # -- served copies ------------------------------------------------------------------------------------------
    def put_checkpoint(self, checkpoint: Path) -> tuple[str, str]:
        digest = file_sha256(checkpoint)
        key = self._key(f"{SERVED_DIR}/{digest}.pt")
        try:  # always uploaded: one PUT replaces the object whole, so a damaged copy never survives an activation
            self.client.upload_file(str(checkpoint), self.bucket, key, ExtraArgs={"Metadata": {"sha256": digest}})
        except Exception as exc:
            raise self._failed("store the checkpoint", key, exc) from None
        return digest, self._url(key)

    def served_path(self, sha256: str) -> Path | None:
        key = self._key(f"{SERVED_DIR}/{sha256}.pt")
        local = self.cache / f"{sha256}.pt"
        with self._fetching:
            if local.is_file() and self._cached_copy_holds(local, sha256):
                return local
            self.cache.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=local.name + ".", suffix=".tmp", dir=self.cache)
            os.close(fd)
            try:
                try:
                    self.client.download_file(self.bucket, key, tmp)
                except Exception as exc:
                    if self._missing(exc):
                        return None
                    raise self._failed("fetch the served checkpoint", key, exc) from None
                found = file_sha256(Path(tmp))
                if found != sha256:
                    raise ModelStoreError(
                        f"{self._url(key)}: the served checkpoint in the store no longer hashes to the sha256 it was "
                        f"made active with (it hashes to {found[:12]}...): it was changed after activation. It was "
                        "not used and nothing was inspected with it. An admin makes the run active again on the "
                        "Models page (that stores a good copy).")
                os.chmod(tmp, 0o444)
                os.replace(tmp, local)
                stat = local.stat()
                self._checked[local] = (stat.st_mtime_ns, stat.st_size)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
        return local

    def _cached_copy_holds(self, local: Path, sha256: str) -> bool:
        """Whether the cached copy still hashes to its name (hashed once per version of the file in this process);
        a damaged one is removed so that it is fetched again from the store, which is the truth."""
        stat = local.stat()
        if self._checked.get(local) == (stat.st_mtime_ns, stat.st_size):
            return True
        if file_sha256(local) == sha256:
            self._checked[local] = (stat.st_mtime_ns, stat.st_size)
            return True
        local.unlink(missing_ok=True)
        return False

    # -- the active record --------------------------------------------------------------------------------------
    def _fetch_active(self, force: bool = False) -> tuple[str, dict | None]:
        """(ETag, record), asking the bucket at most every S3_CHECK_S seconds; a conditional GET, so an unchanged
        record costs one small request and no body."""
        key = self._key(ACTIVE_NAME)
        with self._lock:
            seen = self._seen
            if seen is not None and not force and time.monotonic() - seen[0] < S3_CHECK_S:
                return seen[1], seen[2]
            extra = {"IfNoneMatch": seen[1]} if seen is not None and seen[1] else {}
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=key, **extra)
                etag, record = answer["ETag"], _parse_record(answer["Body"].read())
            except Exception as exc:
                status = getattr(exc, "response", {}).get("ResponseMetadata", {}).get("HTTPStatusCode")
                if status == 304 and seen is not None:
                    etag, record = seen[1], seen[2]
                elif self._missing(exc):
                    etag, record = "", None
                else:
                    if seen is not None:  # the last record stands; the next look is S3_RETRY_S away, so that an
                        # unreachable store does not hold up every page run and every watcher poll with its timeout
                        self._seen = (time.monotonic() + S3_RETRY_S - S3_CHECK_S, seen[1], seen[2])
                    raise self._failed("read the active-model record", key, exc) from None
            self._seen = (time.monotonic(), etag, record)
            return etag, record

    def read_active(self) -> dict | None:
        return self._fetch_active()[1]

    def version(self) -> str:
        return self._fetch_active()[0]

    def write_active(self, record: dict) -> None:
        key = self._key(ACTIVE_NAME)
        try:  # a PUT replaces the object whole: readers get the old record or the new one
            self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(record, indent=2).encode(),
                                   ContentType="application/json")
        except Exception as exc:
            raise self._failed("write the active-model record", key, exc) from None
        self._fetch_active(force=True)  # this process sees its own activation at once


_S3_STORES: dict[tuple[str, str, str], S3Store] = {}  # one per bucket, cache and endpoint: its client and ETag
_S3_LOCK = threading.Lock()


def model_store(root: str | Path | None = None) -> ModelStore:
    """The store `DEFECT_MODEL_STORE` names; unset or empty: the folder `root` (default: the runs root)."""
    where = os.environ.get(STORE_ENV, "").strip()
    if not where:
        return FolderStore(root if root is not None else runs_root())
    if where.startswith("s3://"):
        endpoint = os.environ.get(ENDPOINT_ENV, "").strip()
        cache = str(data_root() / CACHE_DIR)
        with _S3_LOCK:
            key = (where, endpoint, cache)
            if key not in _S3_STORES:
                _S3_STORES[key] = S3Store(where, Path(cache), endpoint or None)
            return _S3_STORES[key]
    if "://" in where:
        raise ModelStoreError(f"{STORE_ENV}={where}: not a folder and not s3://BUCKET/PREFIX. Give a folder every "
                              "machine mounts, an s3:// address, or leave it unset (the runs folder).")
    return FolderStore(Path(where))


class ActiveWatch:
    """Follows the active record of a store cheaply: `changed()` returns the record when its version token changed
    since the last call (the first call included), else None."""

    def __init__(self, store: ModelStore):
        self.store = store
        self._version: str | None = None

    def changed(self) -> dict | None:
        version = self.store.version()
        if version == self._version:
            return None
        self._version = version
        return self.store.read_active() or {}

"""Labelled photo folders: scan, validate, split, decode once, and load in batches."""

from __future__ import annotations

import csv
import os
import random
import stat
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import (DataLoader, Dataset, DistributedSampler, RandomSampler, Sampler, SequentialSampler,
                              WeightedRandomSampler)

from defect_model.common.durable import write_atomic
from defect_model.photos.images import IMAGE_EXTENSIONS, ImageError, is_image_name, prepare_array

EMPTY_CLASS = "class folder without photos; left out of the classes"

SPLITS = ("train", "val")


class DatasetError(ValueError):
    """A dataset that cannot be trained on; the message says which and what to do."""


@dataclass
class DatasetScan:
    """What an ImageFolder holds: one sub-folder per class."""

    root: Path
    classes: list[str]
    items: list[tuple[str, str]]  # (path relative to root, label)
    skipped: list[tuple[str, str]] = field(default_factory=list)  # (path, reason)

    def counts(self) -> dict[str, int]:
        found = Counter(label for _, label in self.items)
        return {name: found.get(name, 0) for name in self.classes}


def data_roots(default: str | Path) -> list[Path]:
    """The folders datasets may be read from: $DEFECT_DATA_ROOTS (separated by os.pathsep), else `default`."""
    listed = [part for part in os.environ.get("DEFECT_DATA_ROOTS", "").split(os.pathsep) if part.strip()]
    return [Path(part).expanduser().resolve() for part in listed or [default]]


def inside_roots(path: str | Path, roots: Sequence[str | Path], rule: str) -> Path:
    """The real path of `path` (a relative one taken from the first root) when it lies inside one of `roots`;
    else a DatasetError that states `rule` and says what to do. Whether the path exists is not said."""
    roots = [Path(root).expanduser().resolve() for root in roots]
    typed = Path(path).expanduser()
    real = (typed if typed.is_absolute() else roots[0] / typed).resolve()
    if not any(real == root or root in real.parents for root in roots):
        listed = ", ".join(str(root) for root in roots)
        raise DatasetError(f"{path}: {rule} {listed}, and this path is not (links that lead out are not "
                           "followed). Copy it into one of them, or ask the administrator to add its folder to "
                           "DEFECT_DATA_ROOTS.")
    return real


def allowed_data_folder(path: str | Path, roots: Sequence[str | Path]) -> Path:
    """The real path of the folder `path` when it lies inside one of `roots`; else a DatasetError.

    Links are followed before the check, so a link inside a root that leads out of it is refused. A
    relative path is taken from the first root. Whether a folder outside the roots exists is not said.
    """
    real = inside_roots(path, roots, "datasets are read only from inside")
    if not real.exists():
        raise DatasetError(f"{path}: the folder does not exist on this server. Check the path; it must hold one "
                           "sub-folder per class.")
    if not real.is_dir():
        raise DatasetError(f"{path}: this is a file, not a folder. Give the folder that holds one sub-folder "
                           "per class.")
    return real


def _kind_of_file(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode) else "special"


def _scan_class(root: Path, class_dir: Path, items: list, skipped: list) -> None:
    """Add the class folder's photos to `items` and every file left out, with the reason, to `skipped`."""
    for path in sorted(class_dir.rglob("*")):
        rel_path = path.relative_to(root)
        if any(part.startswith(".") for part in rel_path.parts):
            continue
        mode = path.lstat().st_mode  # never follows a link, never opens the file
        if stat.S_ISDIR(mode):
            continue
        rel = rel_path.as_posix()
        if stat.S_ISLNK(mode):
            skipped.append((rel, "symbolic link, not followed"))
        elif not stat.S_ISREG(mode):  # reading a FIFO named x.jpg waits for a writer forever
            skipped.append((rel, f"not a regular file ({_kind_of_file(mode)}); not read"))
        elif is_image_name(path):
            items.append((rel, class_dir.name))
        else:
            skipped.append((rel, f"not a photo (extension not one of {', '.join(IMAGE_EXTENSIONS)})"))


def require_dataset_folder(root: str | Path) -> Path:
    """`root` when it is a folder; else a DatasetError that says what it is instead."""
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"{root}: the folder does not exist. Check the path.")
    if not root.is_dir():
        raise DatasetError(f"{root}: this is a file, not a folder. Give the folder that holds one sub-folder per class.")
    return root


def scan_image_folder(root: str | Path) -> DatasetScan:
    """List the photos of a class-per-folder dataset; non-photos, links and empty class folders are reported."""
    root = require_dataset_folder(root)
    items: list[tuple[str, str]] = []
    skipped: list[tuple[str, str]] = []
    class_dirs = []
    for entry in sorted(p for p in root.iterdir() if not p.name.startswith(".")):
        if entry.is_symlink() and entry.is_dir():
            skipped.append((f"{entry.name}/", "symbolic link, not followed"))
        elif entry.is_dir():
            class_dirs.append(entry)
    for class_dir in class_dirs:
        _scan_class(root, class_dir, items, skipped)
    found = {label for _, label in items}
    classes = [d.name for d in class_dirs if d.name in found]
    empty = [d.name for d in class_dirs if d.name not in found]
    skipped += [(f"{name}/", EMPTY_CLASS) for name in empty]
    scan = DatasetScan(root=root, classes=classes, items=items, skipped=skipped)
    check_trainable(scan.counts(), str(root), empty)
    return scan


def check_trainable(counts: dict[str, int], where: str, empty: Sequence[str] = ()) -> None:
    """Refuse a dataset with fewer than 2 classes or a class with fewer than 2 photos."""
    if len(counts) < 2:
        found = ", ".join(counts) or "none"
        without = f" Folder(s) without photos: {', '.join(empty)}." if empty else ""
        raise DatasetError(
            f"{where}: found {len(counts)} class folder(s) with photos ({found}); training needs at least 2.{without} "
            "Put each class's photos in its own sub-folder, e.g. scratch/001.jpg, ok/002.jpg.")
    small = [f"{name} ({n})" for name, n in counts.items() if n < 2]
    if small:
        raise DatasetError(
            f"{where}: these classes have fewer than 2 photos: {', '.join(small)}. "
            "Add photos to them or remove their folders.")


def read_split_csv(path: str | Path, scan: DatasetScan) -> list[tuple[str, str, str]]:
    """Rows (path, label, split) from a `path,label,split` CSV, checked against the folder."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: the split file does not exist. Check the path or leave it out for an 80/20 split.")
    known = set(scan.classes)
    on_disk = {rel for rel, _ in scan.items}
    rows = []
    with path.open(newline="") as handle:
        reader = csv.DictReader(handle)
        missing = {"path", "label", "split"} - set(reader.fieldnames or [])
        if missing:
            raise DatasetError(f"{path}: missing column(s) {', '.join(sorted(missing))}; "
                               "the split file needs the header path,label,split.")
        for line, row in enumerate(reader, start=2):
            rel, label, split = row["path"].strip(), row["label"].strip(), row["split"].strip().lower()
            if split not in SPLITS:
                raise DatasetError(f"{path}, line {line}: split {split!r} must be train or val.")
            if label not in known:
                raise DatasetError(f"{path}, line {line}: label {label!r} is not a class folder "
                                   f"of {scan.root} ({', '.join(scan.classes)}).")
            if rel in on_disk:
                rows.append((rel, label, split))
    if not any(split == "val" for _, _, split in rows) or not any(split == "train" for _, _, split in rows):
        raise DatasetError(f"{path}: the split needs both train and val photos that exist under {scan.root}.")
    return rows


def stratified_split(items: list[tuple[str, str]], val_fraction: float, seed: int) -> list[tuple[str, str, str]]:
    """Seeded per-class split; every class keeps at least one train and one val photo."""
    rng = random.Random(seed)
    by_label: dict[str, list[str]] = {}
    for rel, label in items:
        by_label.setdefault(label, []).append(rel)
    rows = []
    for label in sorted(by_label):
        paths = sorted(by_label[label])
        rng.shuffle(paths)
        n_val = min(len(paths) - 1, max(1, round(len(paths) * val_fraction)))
        rows += [(rel, label, "val") for rel in paths[:n_val]]
        rows += [(rel, label, "train") for rel in paths[n_val:]]
    return sorted(rows)


def read_corrections_csv(path: str | Path, classes: list[str]) -> dict[str, str]:
    """{path: new label} from a `path,label` CSV; an empty label means the photo is unusable."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(f"{path}: the corrections file does not exist. Export the corrections again.")
    corrections = {}
    with path.open(newline="") as handle:
        for line, row in enumerate(csv.DictReader(handle), start=2):
            label = (row.get("label") or "").strip()
            if label and label not in classes:
                raise DatasetError(f"{path}, line {line}: label {label!r} is not one of the classes "
                                   f"({', '.join(classes)}).")
            corrections[row["path"].strip()] = label
    return corrections


def apply_corrections(rows: list[tuple[str, str, str]], corrections: dict[str, str]) -> list[tuple[str, str, str]]:
    """Relabel or drop photos of the split; corrected photos from outside the dataset join the training split."""
    known = {rel for rel, _, _ in rows}
    fixed = [(rel, corrections.get(rel, label), split) for rel, label, split in rows
             if corrections.get(rel, label) != ""]
    extra = [(rel, label, "train") for rel, label in sorted(corrections.items())
             if rel not in known and label and Path(rel).is_absolute()]
    return fixed + extra


def write_split_csv(path: str | Path, rows: list[tuple[str, str, str]]) -> None:
    def write(handle) -> None:
        writer = csv.writer(handle)
        writer.writerow(["path", "label", "split"])
        writer.writerows(rows)

    write_atomic(path, write, newline="")  # a resume reads it again: a crash must not leave it torn


@dataclass
class DecodedImages:
    """Photos decoded once into uint8 (N, 3, H, W), with the files that failed."""

    paths: list[str]
    labels: torch.Tensor
    pixels: torch.Tensor
    failed: list[tuple[str, str]]


def decode_images(root: Path, rows: list[tuple[str, str]], classes: list[str], size: int,
                  resize_mode: str, threads: int = 2) -> DecodedImages:
    """Decode each photo once; unreadable ones are listed in `failed`, never raised."""
    index = {name: i for i, name in enumerate(classes)}

    def decode(row):
        rel, _ = row
        try:
            return prepare_array(root / rel, size, resize_mode, name=rel), None
        except ImageError as exc:
            return None, f"{exc.problem}"

    with ThreadPoolExecutor(max_workers=max(1, threads)) as pool:
        results = list(pool.map(decode, rows))
    keep = [(row, array) for row, (array, _) in zip(rows, results) if array is not None]
    failed = [(row[0], reason) for row, (_, reason) in zip(rows, results) if reason is not None]
    if keep:
        pixels = torch.from_numpy(np.stack([array for _, array in keep])).permute(0, 3, 1, 2).contiguous()
    else:
        pixels = torch.zeros((0, 3, size, size), dtype=torch.uint8)
    labels = torch.tensor([index[label] for (_, label), _ in keep], dtype=torch.long)
    return DecodedImages([rel for (rel, _), _ in keep], labels, pixels, failed)


class DecodedDataset(Dataset):
    """Indexes into decoded photos; returns (uint8 image, label, index)."""

    def __init__(self, decoded: DecodedImages):
        self.decoded = decoded

    def __len__(self) -> int:
        return len(self.decoded.paths)

    def __getitem__(self, i: int):
        return self.decoded.pixels[i], self.decoded.labels[i], i


def class_balance_weights(labels: torch.Tensor) -> torch.Tensor:
    """Per-photo weights that make every class equally likely to be drawn."""
    counts = torch.bincount(labels).float()
    return (1.0 / counts.clamp(min=1))[labels]


class RankShare(Sampler):
    """Process `rank`'s share of a draw made alike on every process (the same seeded generator): every
    `world_size`-th photo of it, as many for each process, so that together they train on the one draw."""

    def __init__(self, sampler: Sampler, rank: int, world_size: int):
        self.sampler, self.rank, self.world_size = sampler, rank, world_size

    def __len__(self) -> int:
        return len(self.sampler) // self.world_size

    def __iter__(self):
        return iter(list(self.sampler)[self.rank::self.world_size][:len(self)])


def make_loader(dataset: DecodedDataset, *, batch_size: int, train: bool, seed: int, epoch: int = 0,
                world_size: int = 1, rank: int = 0, sampling: str = "shuffle", epoch_images: int = 0) -> DataLoader:
    """The one place the sampler is chosen: class-balanced, shuffled or in order, and over several processes
    (torchrun) each process's share of it. `batch_size`: photos per process and step."""
    generator = torch.Generator().manual_seed(seed * 1000 + epoch)
    draws = epoch_images or len(dataset)
    if train and sampling == "balanced":
        sampler = WeightedRandomSampler(class_balance_weights(dataset.decoded.labels), num_samples=draws,
                                        replacement=True, generator=generator)
    elif world_size > 1 and not (train and epoch_images):
        sampler = DistributedSampler(dataset, num_replicas=world_size, rank=rank, shuffle=train, seed=seed)
        sampler.set_epoch(epoch)
    elif train:
        sampler = RandomSampler(dataset, num_samples=draws, generator=generator)
    else:
        sampler = SequentialSampler(dataset)
    if world_size > 1 and not isinstance(sampler, DistributedSampler):
        sampler = RankShare(sampler, rank, world_size)
    # Photos are already decoded in memory: worker processes would only add copying.
    return DataLoader(dataset, batch_size=batch_size, sampler=sampler, num_workers=0,
                      drop_last=train and len(sampler) > batch_size)


def photo_sizes(root: Path, paths: list[str], limit: int = 2000) -> list[tuple[int, int]]:
    """(width, height) of up to `limit` photos, read from their headers only."""
    from PIL import Image

    sizes = []
    for rel in paths[:limit]:
        try:
            with Image.open(root / rel) as image:
                sizes.append(image.size)
        except (OSError, ValueError):
            continue
    return sizes

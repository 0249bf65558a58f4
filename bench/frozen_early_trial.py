"""A trial outside the product, on ELPV's inner split (bench/finetune_trials.py's: a seeded fifth of each class of
split.csv's training rows held out; the validation split is never read): the pretrained network's stem and first
blocks frozen, their outputs computed once per photo and per symmetry of the square (8 views), and only the rest
trained, for a fixed number of passes. It asks whether buying ~3x more passes this way gets ELPV nearer the
issue's 0.85 than the product preset's plain fine-tuning does at the same inner split (0.794 at 12 minutes).

    .venv/bin/python bench/frozen_early_trial.py [--size 224] [--freeze 4] [--passes 16]

Accuracy per pass does not depend on how busy the machine is; the seconds printed do.
Prints one line per 4 passes and writes bench/results/frozen-early-trial.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from finetune_trials import ELPV, inner_split  # noqa: E402

from defect_model.photos.images import prepare_array  # noqa: E402
from defect_model.train.model import build_model  # noqa: E402

GOOD = "functional"
VIEWS = 8  # the symmetries of the square: 4 rotations, each also transposed


def view(x: torch.Tensor, v: int) -> torch.Tensor:
    if v & 4:
        x = x.transpose(-1, -2)
    return torch.rot90(x, v & 3, (-2, -1))


def decode(rows, classes: list[str], size: int) -> tuple[torch.Tensor, torch.Tensor]:
    pixels = np.stack([prepare_array(ELPV / path, size, "pad") for path in rows.path])
    labels = torch.tensor([classes.index(label) for label in rows.label])
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).contiguous(), labels


@torch.no_grad()
def frozen_outputs(frozen: nn.Module, pixels: torch.Tensor) -> torch.Tensor:
    """(views, photos, C, h, w) in bf16: the frozen part's output for each photo under each view."""
    out = []
    for v in range(VIEWS):
        parts = []
        for i in range(0, len(pixels), 64):
            x = (view(pixels[i:i + 64], v).float() / 255 - 0.5) / 0.5  # the Lite weights' own mean/std
            parts.append(frozen(x.contiguous(memory_format=torch.channels_last)).to(torch.bfloat16))
        out.append(torch.cat(parts))
    return torch.stack(out)


def scores(tail: nn.Module, features: torch.Tensor, labels: torch.Tensor, classes: list[str]) -> dict:
    """Accuracy, defect miss rate and false-reject rate of the mean prediction over the 8 views."""
    tail.eval()
    with torch.no_grad():
        probs = sum(torch.cat([tail(features[v, i:i + 128].float().contiguous(memory_format=torch.channels_last))
                               .softmax(1) for i in range(0, len(labels), 128)]) for v in range(VIEWS))
    pred, good = probs.argmax(1), classes.index(GOOD)
    defect = labels != good
    return {"accuracy": round((pred == labels).float().mean().item(), 4),
            "defect_miss_rate": round(((pred == good) & defect).sum().item() / defect.sum().item(), 4),
            "false_reject_rate": round(((pred != good) & ~defect).sum().item() / (~defect).sum().item(), 4),
            "recall": {c: round(((pred == i) & (labels == i)).sum().item() / (labels == i).sum().item(), 3)
                       for i, c in enumerate(classes)}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--freeze", type=int, default=4, help="stem and this many blocks frozen")
    parser.add_argument("--passes", type=int, default=16)
    args = parser.parse_args()
    torch.manual_seed(0)
    import pandas as pd

    split = pd.read_csv(inner_split(Path("/tmp/elpv-inner-split.csv")))
    classes = sorted(split.label.unique())
    started = time.monotonic()
    x_train, y_train = decode(split[split.split == "train"], classes, args.size)
    x_val, y_val = decode(split[split.split == "val"], classes, args.size)
    net = build_model("efficientnet_lite0", len(classes), pretrained=True).to(memory_format=torch.channels_last)
    frozen = nn.Sequential(net.conv_stem, net.bn1, *net.blocks[:args.freeze]).eval().requires_grad_(False)
    tail = nn.Sequential(*net.blocks[args.freeze:], net.conv_head, net.bn2, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         net.classifier)
    f_train, f_val = frozen_outputs(frozen, x_train), frozen_outputs(frozen, x_val)
    cache_s = time.monotonic() - started
    print(f"frozen outputs {tuple(f_train.shape)} in {cache_s:.0f} s", flush=True)

    counts = torch.bincount(y_train, minlength=len(classes)).float()
    weights = (counts.sum() / counts).sqrt()  # the preset's 1/sqrt class weighting
    weights = weights / (weights * counts).sum() * counts.sum()
    optimizer = torch.optim.AdamW(tail.parameters(), lr=1e-3, weight_decay=1e-4)
    per_pass = math.ceil(len(y_train) / 32)
    total = args.passes * per_pass
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: min(1.0, (s + 1) / per_pass) * 0.5 * (1 + math.cos(math.pi * min(s, total) / total)))
    log, train_s = [], 0.0
    for done in range(1, args.passes + 1):
        tail.train()
        t0 = time.monotonic()
        order, views = torch.randperm(len(y_train)), torch.randint(0, VIEWS, (len(y_train),))
        for i in range(0, len(order), 32):
            idx = order[i:i + 32]
            x = f_train[views[idx], idx].float().contiguous(memory_format=torch.channels_last)
            loss = F.cross_entropy(tail(x), y_train[idx], weight=weights, label_smoothing=0.1)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            schedule.step()
        train_s += time.monotonic() - t0
        if done % 4 == 0 or done == args.passes:
            log.append({"passes": done, "train_s": round(train_s), **scores(tail, f_val, y_val, classes)})
            print(log[-1], flush=True)
    out = ROOT / "bench/results/frozen-early-trial.json"
    out.write_text(json.dumps({"args": vars(args), "frozen_outputs_s": round(cache_s), "log": log,
                               "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}, indent=1) + "\n")


if __name__ == "__main__":
    main()

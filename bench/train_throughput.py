"""Measure training throughput (images/s) per backbone and image size on this machine.

The numbers feed `defect_model.workflows.insights.BUILTIN_IMAGES_PER_S`, the fallback of the Train page's
time estimate when no past run on this machine has measured the same backbone. A "step" here is
what the engine times in its `step` events: normalise, forward, cross-entropy, backward, AdamW step
(channels_last, batch 32, random photos, 5 classes), in the precision a new run would pick here
(`precision: auto`: bf16 mixed precision on a processor with native bf16, else fp32).

    LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libtcmalloc_minimal.so.4 python bench/train_throughput.py
"""

from __future__ import annotations

import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, ".")
from defect_model.common.config import IMAGENET_MEAN, IMAGENET_STD  # noqa: E402
from defect_model.train.hardware import autocast, resolve_precision  # noqa: E402
from defect_model.common.backbones import backbone as registered  # noqa: E402
from defect_model.train.model import build_model  # noqa: E402
from defect_model.photos.preprocess import normalize_batch  # noqa: E402


def images_per_s(backbone: str, size: int, batch: int = 32, warmup: int = 2, steps: int = 3) -> float:
    torch.manual_seed(0)
    model = build_model(backbone, 5).to(memory_format=torch.channels_last)
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    pixels = torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
    labels = torch.randint(0, 5, (batch,))
    timings = []
    precision, _ = resolve_precision("auto", torch.device("cpu"), registered(backbone).family)
    for i in range(warmup + steps):
        started = time.perf_counter()
        with autocast(precision, torch.device("cpu")):
            logits = model(normalize_batch(pixels, IMAGENET_MEAN, IMAGENET_STD))
        loss = F.cross_entropy(logits.float(), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= warmup:
            timings.append(time.perf_counter() - started)
    return batch / min(timings)


if __name__ == "__main__":
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"precision {resolve_precision('auto', torch.device('cpu'))[0]}")
    for backbone in sys.argv[1:] or ("resnet18", "resnet34", "resnet50"):
        for size in (64, 224):  # the Train page interpolates between them
            print(f'("{backbone}", {size}): {images_per_s(backbone, size):.1f},', flush=True)

"""Turn uint8 photo batches into the network's input: one home for training and inference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def normalize_batch(batch: torch.Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float],
                    channels_last: bool = True) -> torch.Tensor:
    """uint8 batch (N,3,H,W) or (N,H,W,3) -> float32 (N,3,H,W), per-channel normalised."""
    if isinstance(batch, np.ndarray):
        batch = torch.from_numpy(np.ascontiguousarray(batch))
    if batch.ndim != 4:
        raise ValueError(f"expected a batch of images with 4 dimensions, got shape {tuple(batch.shape)}")
    if batch.shape[-1] == 3 and batch.shape[1] != 3:
        batch = batch.permute(0, 3, 1, 2)
    x = batch.float().div_(255.0)
    mean_t = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    std_t = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    x = x.sub_(mean_t).div_(std_t)
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    return x.contiguous(memory_format=memory_format)

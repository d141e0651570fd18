"""PyTorch distributed (``torchrun``) support: the process group, which rows each rank owns, and
the collectives the pipeline needs.

Under ``torchrun --nproc-per-node N robdistill ...`` every rank runs the same command. Ranks share
the data order (same seed), split every global mini-batch and every evaluation by rank
(rows ``rank::world_size``), train one model through DistributedDataParallel, and gather per-sample
results in the global order. Rank 0 alone logs to MLflow and writes checkpoints and training state
(each rank keeps its own evaluation state file). Deterministic work matches one process to float
rounding; random draws (training attack, PGD random start) come from a stream per rank, so they
match one process in distribution only. Outside ``torchrun`` nothing here does anything.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.distributed as dist

from robdistill.core.errors import UserError


@dataclass(frozen=True)
class DistContext:
    """This process's place in the job; the default is a single process."""

    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def context() -> DistContext:
    if dist.is_available() and dist.is_initialized():
        return DistContext(dist.get_rank(), dist.get_world_size())
    return DistContext()


def is_main() -> bool:
    return context().is_main


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def backend_for(device: str) -> str:
    """gloo on the CPU, nccl on CUDA devices."""
    return "nccl" if device.startswith("cuda") else "gloo"


def init_from_env(device: str) -> tuple[DistContext, str]:
    """Join the process group ``torchrun`` describes in the environment (no-op otherwise); each rank
    of a CUDA job takes the GPU of its LOCAL_RANK. Returns the context and the device to use."""
    if not launched_by_torchrun():
        return DistContext(), device
    if not dist.is_available():
        raise UserError("this PyTorch build has no torch.distributed; run without torchrun")
    if not dist.is_initialized():
        if device.startswith("cuda"):
            device = f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
            torch.cuda.set_device(device)
        try:
            dist.init_process_group(backend_for(device))
        except (RuntimeError, ValueError) as exc:
            raise UserError(f"cannot join the torchrun process group ({str(exc).splitlines()[0][:160]}); "
                            f"check MASTER_ADDR / MASTER_PORT") from None
    return context(), device


def shutdown() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def barrier() -> None:
    if context().active:
        dist.barrier()


def local_rows(n: int, ctx: DistContext | None = None) -> slice:
    """The rows of an n-row batch this rank owns: ``rank::world_size`` (the whole batch alone)."""
    ctx = ctx or context()
    return slice(ctx.rank, n, ctx.world_size)


def broadcast_object(value: Any, src: int = 0) -> Any:
    """Rank ``src``'s ``value`` on every rank (identity outside torchrun)."""
    if not context().active:
        return value
    box = [value]
    dist.broadcast_object_list(box, src=src)
    return box[0]


def all_reduce_sum(values: dict[str, float]) -> dict[str, float]:
    """Element-wise sum of per-rank float dictionaries with the same keys (in float64)."""
    if not context().active or not values:
        return values
    keys = sorted(values)
    tensor = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if dist.get_backend() == "nccl":
        tensor = tensor.cuda()
    dist.all_reduce(tensor)
    return {k: float(v) for k, v in zip(keys, tensor.cpu().tolist())}


def gather_rows(local: torch.Tensor, n: int) -> torch.Tensor:
    """Undo :func:`local_rows`: every rank passes the rows it owns of an n-row result; every rank
    gets the n rows back in the global order."""
    ctx = context()
    if not ctx.active:
        return local
    if local.dtype == torch.bool:  # not every backend gathers bools
        return gather_rows(local.to(torch.uint8), n).bool()
    if dist.get_backend() == "nccl" and local.device.type != "cuda":
        return gather_rows(local.cuda(), n).to(local.device)
    size = -(-n // ctx.world_size)  # the largest share
    padded = local.new_zeros((size, *local.shape[1:]))
    padded[:len(local)] = local
    parts = [torch.empty_like(padded) for _ in range(ctx.world_size)]
    dist.all_gather(parts, padded.contiguous())
    out = local.new_empty((n, *local.shape[1:]))
    for rank, part in enumerate(parts):
        count = len(range(rank, n, ctx.world_size))
        out[rank::ctx.world_size] = part[:count]
    return out


def map_rows(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> torch.Tensor:
    """``fn(x)`` computed with each rank doing its own rows, gathered in the global order on every
    rank (e.g. the teacher logits a distillation caches)."""
    if not context().active:
        return fn(x)
    mine = fn(x[local_rows(len(x))])
    return gather_rows(mine, len(x))


def all_gather_object(value: Any) -> list[Any]:
    """Every rank's ``value``, in rank order, on every rank (``[value]`` outside torchrun)."""
    ctx = context()
    if not ctx.active:
        return [value]
    out: list[Any] = [None] * ctx.world_size
    dist.all_gather_object(out, value)
    return out

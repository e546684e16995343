"""Process-group helpers for torchrun (DDP). A single process needs none of this set up."""
from __future__ import annotations

import dataclasses
import os

import torch
import torch.distributed as dist


@dataclasses.dataclass(frozen=True)
class DistContext:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def check_device(device: str) -> None:
    """Raise ValueError when `device` ("auto", "cpu" or "cuda") cannot be used here."""
    if device not in ("auto", "cpu", "cuda"):
        raise ValueError(f"device must be auto, cpu or cuda, got {device!r}")
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device=cuda was asked for, but this torch ({torch.__version__}) sees no CUDA device"
                         + ("" if torch.version.cuda else ": it is a CPU-only build"))


def init_distributed(device: str = "auto") -> DistContext:
    """Read torchrun's environment; start the process group when there is more than one process.

    `device`: "auto" (CUDA when available), "cpu" or "cuda". gloo is used on CPU, NCCL on CUDA.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    check_device(device)
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    dev = torch.device("cuda", local_rank) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world_size > 1 and not dist.is_initialized():
        dist.init_process_group(backend="nccl" if use_cuda else "gloo")
    return DistContext(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def all_gather_objects(obj, ctx: DistContext) -> list:
    """Every process's `obj`, in rank order (a one-element list without a process group)."""
    if not ctx.distributed:
        return [obj]
    out = [None] * ctx.world_size
    dist.all_gather_object(out, obj)
    return out


def any_process(ctx: DistContext, flag: bool) -> bool:
    """Whether `flag` is true in any process; every process gets the same answer."""
    if not ctx.distributed:
        return flag
    votes = torch.tensor([int(flag)], device=ctx.device)  # NCCL reduces CUDA tensors only
    dist.all_reduce(votes, op=dist.ReduceOp.MAX)
    return bool(votes.item())


def barrier(ctx: DistContext) -> None:
    if ctx.distributed:
        dist.barrier()


def finish(ctx: DistContext) -> None:
    """Wait for every process, then close the process group: a process that exits while another
    still holds its connections makes gloo abort that one."""
    if ctx.distributed and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()

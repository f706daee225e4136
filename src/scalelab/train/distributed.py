"""Data-parallel setup from the environment ``torchrun`` provides.

Without ``torchrun`` (no ``WORLD_SIZE``) everything is single-process and these helpers
are no-ops. Under ``torchrun --nproc_per_node=K`` each process trains on its own slice of
every batch (the stateless sampler keys batches by rank) and DDP averages gradients:
gloo on CPU, NCCL on GPUs.

With ``runtime.fsdp`` the model is instead sharded with FSDP2 (``fully_shard``, per
Transformer block, then the root; Zhao et al. 2023, "PyTorch FSDP"): each rank keeps
1/world of the parameters, gradients and optimizer state. Checkpoints gather the full
model and optimizer state (``torch.distributed.checkpoint.state_dict``, full_state_dict,
cpu_offload) into rank 0, so they have the same files as DDP ones; the optimizer's is
keyed by parameter name.
"""

from __future__ import annotations

import contextlib
import copy
import datetime
import inspect
import os
import weakref
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def resolve_device(name: str, local_rank: int = 0) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda":
        if not torch.cuda.is_available():
            from scalelab.errors import UserError

            raise UserError("device 'cuda' requested but no CUDA device is available")
        return torch.device("cuda", local_rank)
    return torch.device(name)


def setup(device: str = "auto") -> DistInfo:
    """Initialise the process group if launched by torchrun; pick the device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world > 1 and not dist.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world=world, local_rank=local_rank, device=dev)


def teardown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


def mean_across(info: DistInfo, values: dict[str, float]) -> dict[str, float]:
    """Average scalar metrics over ranks (every rank gets the same numbers)."""
    if not info.enabled or not values:
        return values
    keys = sorted(values)
    t = torch.tensor([values[k] for k in keys], dtype=torch.float64)
    if info.device.type == "cuda":
        t = t.to(info.device)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return {k: float(v) / info.world for k, v in zip(keys, t.tolist())}


def broadcast(info: DistInfo, obj: Any) -> Any:
    """Send a picklable object from rank 0 to every rank (torch's own collective)."""
    if not info.enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def gather(info: DistInfo, obj: Any) -> list[Any]:
    if not info.enabled:
        return [obj]
    out: list[Any] = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def wrap(model: torch.nn.Module, info: DistInfo, *, fsdp: bool = False) -> torch.nn.Module:
    """DDP around ``model`` under torchrun; as it is alone, or when FSDP already sharded it."""
    if not info.enabled or fsdp:
        return model
    from torch.nn.parallel import DistributedDataParallel as DDP

    ids = [info.local_rank] if info.device.type == "cuda" else None
    return DDP(model, device_ids=ids)


def no_sync(model: torch.nn.Module) -> contextlib.AbstractContextManager | None:
    return model.no_sync() if hasattr(model, "no_sync") else None


# ====================================================================== FSDP2

# An unsharded copy on the CPU of rank 0 of each sharded model: what checkpoints and the
# final export are written from (the export functions want an ordinary module).
_FULL_COPY: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def _sharded_units(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The modules FSDP2 shards one by one: the decoder's blocks, BERT's layers."""
    from scalelab.models.decoder import Block

    return [m for m in model.modules() if isinstance(m, Block) or type(m).__name__ == "BertLayer"]


def shard(
    model: torch.nn.Module, optimizer: torch.optim.Optimizer, info: DistInfo, evaluation: Any
) -> torch.optim.Optimizer:
    """Shard ``model`` in place with FSDP2 and return a new optimizer over the shards.

    Called after resuming (the plain model and optimizer hold the checkpoint's state,
    which carries over into the shards) and before ``torch.compile``. A single process
    has nothing to shard: ``model`` and ``optimizer`` stay as they are. ``evaluation``
    is the trainer's: keeping the best weights aside (fine-tuning) is not supported.
    """
    if getattr(evaluation, "restore_best", False):
        from scalelab.errors import UserError

        raise UserError("runtime.fsdp cannot keep the best weights (fine-tuning); use DDP")
    if not info.enabled:
        return optimizer
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_optimizer_state_dict,
        set_optimizer_state_dict,
    )
    from torch.distributed.fsdp import fully_shard

    full = StateDictOptions(full_state_dict=True)
    saved = get_optimizer_state_dict(model, optimizer, options=full) if optimizer.state else None
    name_of = {id(p): n for n, p in model.named_parameters()}
    if info.is_main:
        _FULL_COPY[model] = copy.deepcopy(model).cpu()
    for unit in _sharded_units(model):
        fully_shard(unit)
    fully_shard(model)
    new = dict(model.named_parameters())
    groups = [
        {**{k: v for k, v in g.items() if k != "params"},
         "params": [new[name_of[id(p)]] for p in g["params"]]}
        for g in optimizer.param_groups
    ]  # fmt: skip
    accepted = inspect.signature(type(optimizer)).parameters  # defaults hold more keys
    kwargs = {k: v for k, v in optimizer.defaults.items() if k in accepted}
    sharded = type(optimizer)(groups, **kwargs)
    if saved is not None:
        set_optimizer_state_dict(model, sharded, saved, options=full)
    return sharded


class _SavedState:
    """A gathered state dict in the place of the optimizer ``save_checkpoint`` writes."""

    def __init__(self, state: dict[str, Any]) -> None:
        self._state = state

    def state_dict(self) -> dict[str, Any]:
        return self._state


def full_state(model: torch.nn.Module, optimizer: Any) -> tuple[Any, Any]:
    """``(model, optimizer)`` to write a checkpoint from (collective under FSDP).

    Unsharded models come back as they are. For a model :func:`shard` sharded, every rank
    must call this: rank 0 gets its full copy loaded with the current weights and the
    full optimizer state (on the CPU), the other ranks ``(None, None)``.
    """
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(model, FSDPModule):
        return model, optimizer
    from torch.distributed.checkpoint.state_dict import (
        StateDictOptions,
        get_model_state_dict,
        get_optimizer_state_dict,
    )

    opts = StateDictOptions(full_state_dict=True, cpu_offload=True)
    weights = get_model_state_dict(model, options=opts)
    optim = get_optimizer_state_dict(model, optimizer, options=opts)
    copy_ = _FULL_COPY.get(model)
    if copy_ is None:  # not rank 0
        return None, None
    copy_.load_state_dict(weights)
    return copy_, _SavedState(optim)


def full_model(model: torch.nn.Module) -> torch.nn.Module:
    """The unsharded copy of a model :func:`shard` sharded (rank 0), else ``model`` itself."""
    return _FULL_COPY.get(model, model)

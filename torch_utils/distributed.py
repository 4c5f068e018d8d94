"""Process-group setup in one place, for every command that runs on several
processes: `--gpus N` spawns N local processes, and the same code runs
unchanged under torchrun (one process per device on each node, env://
rendezvous). NCCL on CUDA, gloo on CPU.
"""

import os

import torch

from . import training_stats

#----------------------------------------------------------------------------

def torchrun_world():
    """(rank, local_rank, world_size) when started by torchrun (or any
    launcher that sets its environment variables), else None."""
    if 'RANK' not in os.environ or 'WORLD_SIZE' not in os.environ:
        return None
    return int(os.environ['RANK']), int(os.environ.get('LOCAL_RANK', 0)), int(os.environ['WORLD_SIZE'])

def process_device(base_device, local_rank):
    """The device of the process with `local_rank` on its node: cuda:local_rank
    when running on CUDA with one process per GPU, else `base_device`."""
    base_device = torch.device(base_device)
    if base_device.type == 'cuda' and base_device.index is None:
        return torch.device('cuda', local_rank)
    return base_device

def init_process_group(rank, world_size, device, init_method):
    """Join the group (a no-op for one process) and make training_stats
    gather across it. `init_method` is 'env://' under torchrun, or a
    file:// rendezvous that the spawning process created."""
    device = torch.device(device)
    if world_size > 1:
        backend = 'nccl' if device.type == 'cuda' else 'gloo'
        if device.type == 'cuda':
            torch.cuda.set_device(device)
        torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    training_stats.init_multiprocessing(rank=rank, sync_device=(device if world_size > 1 else None))

def threads_per_process(local_world_size):
    """CPU threads for each of `local_world_size` processes sharing this machine."""
    return max((os.cpu_count() or 1) // local_world_size, 1)

def all_gather_objects(obj):
    """[obj of rank 0, obj of rank 1, ...]; [obj] in a single process."""
    if not torch.distributed.is_initialized():
        return [obj]
    gathered = [None] * torch.distributed.get_world_size()
    torch.distributed.all_gather_object(gathered, obj)
    return gathered

def broadcast_module(module, src=0):
    """Give every process the parameters and buffers of rank `src`."""
    if not torch.distributed.is_initialized():
        return
    for tensor in list(module.parameters()) + list(module.buffers()):
        torch.distributed.broadcast(tensor.data, src=src)

#----------------------------------------------------------------------------

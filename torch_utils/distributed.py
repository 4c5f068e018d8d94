"""Process-group setup in one place, for every command that runs on several
processes: `--gpus N` spawns N local processes, and the same code runs
unchanged under torchrun (one process per device on each node, env://
rendezvous). NCCL on CUDA, gloo on CPU.
"""

import logging
import os
import tempfile

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
    """Join the group and make training_stats gather across it; nothing to do
    for a single process. `init_method` is 'env://' under torchrun, or a
    file:// rendezvous that the launching process created."""
    if world_size == 1:
        return
    device = torch.device(device)
    backend = 'nccl' if device.type == 'cuda' else 'gloo'
    if device.type == 'cuda':
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend=backend, init_method=init_method, rank=rank, world_size=world_size)
    training_stats.init_multiprocessing(rank=rank, sync_device=device)

def setup_process(rank, world_size, base_device, init_method):
    """Make this process one of `world_size`: pick its device (its own GPU on
    CUDA), share the CPU cores with its local peers, join the group.
    Returns the device."""
    world = torchrun_world()
    local_rank, local_world = (world[1], int(os.environ.get('LOCAL_WORLD_SIZE', world_size))) if world else (rank, world_size)
    device = process_device(base_device, local_rank)
    if device.type == 'cpu' and local_world > 1: # A single process keeps torch's (or OMP_NUM_THREADS') choice.
        torch.set_num_threads(threads_per_process(local_world))
    init_process_group(rank=rank, world_size=world_size, device=device, init_method=init_method)
    return device

def launch(fn, num_processes, *args):
    """Run fn(rank, init_method, *args) as this process's part of a torchrun
    job, in this process alone, or in `num_processes` spawned processes."""
    world = torchrun_world()
    if world is not None:
        fn(world[0], 'env://', *args)
        return
    with tempfile.TemporaryDirectory() as temp_dir:
        init_method = f'file://{os.path.abspath(os.path.join(temp_dir, ".torch_distributed_init"))}'
        if num_processes == 1:
            fn(0, init_method, *args)
        else:
            # When one process fails, torch logs a warning as it stops the others; the error itself is reported.
            logging.getLogger('torch.multiprocessing.spawn').setLevel(logging.ERROR)
            torch.multiprocessing.spawn(fn=fn, args=(init_method, *args), nprocs=num_processes)

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

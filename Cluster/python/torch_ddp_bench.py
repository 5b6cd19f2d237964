#!/usr/bin/env python3
"""PyTorch DDP (gloo) training-step throughput of the grouped multi-branch network: N ranks x T
threads on this machine, what a user would otherwise run for CPU data parallelism
(Cluster/bench-ranks.sh compares it with reid-dist under mpirun; optional, needs torch).

usage: torch_ddp_bench.py --ranks 2 --threads 1 --case r50|r18w32 [--steps 5] [--layout cl|nchw] [--precision fp32|bf16]
Each rank's batch is the case's (16 for r50, 32 for r18w32), as `reid-dist bench` under mpirun;
images/s counts all ranks. Run it with OMP_NUM_THREADS set to --threads. --precision bf16: forward
and loss under torch.autocast("cpu", torch.bfloat16)."""
import argparse
import json
import os
import sys
import time

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import reid_dist_torch as rd  # noqa: E402

CASES = {"r50": (50, 64, 256, 128, 16), "r18w32": (18, 32, 128, 64, 32)}


def worker(rank, a, q):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(a.port))
    torch.set_num_threads(a.threads)
    dist.init_process_group("gloo", rank=rank, world_size=a.ranks)
    depth, width, h, w, batch = CASES[a.case]
    torch.manual_seed(0)
    fmt = torch.channels_last if a.layout == "cl" else torch.contiguous_format
    m = rd.training_net(751, depth, width, 1, 4, 2).train().to(memory_format=fmt)
    ddp = torch.nn.parallel.DistributedDataParallel(m)
    opt = torch.optim.SGD(ddp.parameters(), lr=0.01, momentum=0.9, weight_decay=5e-4)
    x, y = torch.randn(batch, 3, h, w).to(memory_format=fmt), torch.randint(0, 751, (batch,))
    times = []
    for s in range(a.steps + 2):
        dist.barrier()
        t0 = time.perf_counter()
        rd.train_step(ddp, opt, x, y, a.precision == "bf16")
        dist.barrier()
        if s >= 2:
            times.append(time.perf_counter() - t0)
    if rank == 0:
        times.sort()
        med = times[len(times) // 2]
        q.put({"case": a.case, "ranks": a.ranks, "threads": a.threads, "layout": a.layout, "precision": a.precision,
               "ms_per_step": med * 1e3, "images_per_second": batch * a.ranks / med})
    dist.destroy_process_group()


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--case", default="r50", choices=sorted(CASES))
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--layout", default="cl", choices=["cl", "nchw"])
    p.add_argument("--port", type=int, default=29533)
    p.add_argument("--precision", choices=["fp32", "bf16"], default="fp32")
    a = p.parse_args()
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, a, q)) for r in range(a.ranks)]
    for x in procs:
        x.start()
    result = q.get()
    for x in procs:
        x.join()
    print(json.dumps(result))

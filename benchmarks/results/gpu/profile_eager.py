# The eager profile behind profile_eager.txt, exactly as it ran (1x H200, torch 2.11, from the repository root:
# PYTHONPATH=$PWD python3 profile_eager.py). Note: "GPU kernel time" below sums self device time over every
# key_averages row, and both an aten op and its kernel carry that time, so it counts each kernel twice: halve it
# (and the "busy" share) for the real kernel time, which is each table's "Self CUDA time total" / 5.
import torch, time
from torch.profiler import profile, ProfilerActivity
from benchmarks import common
from benchmarks.compression import Encoders
for shape in ("llama2-7b", "smollm2"):
    enc = Encoders(common.SHAPES[shape], torch.device("cuda"), torch.bfloat16, ("icformer", "icae"), 8193, 128, 64)
    for b in (1, 64):
        x = torch.randint(5, 30000, (b, 512), device="cuda")
        for name in ("icformer", "icae"):
            fn = enc.callable_for(name)
            for _ in range(3): fn(x)
            torch.cuda.synchronize()
            with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as p:
                for _ in range(5): fn(x)
                torch.cuda.synchronize()
            ev = p.key_averages()
            dev = sum(e.self_device_time_total for e in ev) / 5 / 1e3
            cpu = sum(e.self_cpu_time_total for e in ev) / 5 / 1e3
            t0 = time.perf_counter(); [fn(x) for _ in range(5)]; torch.cuda.synchronize(); wall = (time.perf_counter() - t0) / 5 * 1e3
            print(f"== {shape} {name} windows={b}: wall {wall:.3f} ms, GPU kernel time {dev:.3f} ms ({dev / wall:.0%} busy), host op time {cpu:.3f} ms")
            print(ev.table(sort_by="self_device_time_total", row_limit=8, max_name_column_width=50))
    del enc; torch.cuda.empty_cache()

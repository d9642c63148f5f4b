"""In-place α sweeps on a GPU: the model sits on the GPU, the ranker copy and the task vector on the CPU.

Checks, on a t5-base-shaped model (random weights, built here in memory and saved once):
  * set_alpha(α) on the GPU gives the same weights as the CPU streaming merge, bit for bit;
  * set_alpha(0) restores the ranker bit for bit;
  * GPU memory beyond the model stays at about one tensor (the vector stays on the CPU);
and times one α update against a full reload of the merged model.

    python benchmarks/gpu_sweep.py [--work /tmp/gpu-sweep] [--dtype float32|bfloat16]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from transformers import T5Config, T5ForConditionalGeneration

from taskrank.arithmetic import AlphaSweep, TaskVector, merge


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--work", type=Path, default=Path("/tmp/gpu-sweep"))
    ap.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"))
    args = ap.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("no CUDA device")
    dtype = getattr(torch, args.dtype)
    cfg = T5Config(vocab_size=32128, d_model=768, d_kv=64, d_ff=3072, num_layers=12, num_heads=12,
                   decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)  # fmt: skip
    cfg.architectures = ["T5ForConditionalGeneration"]
    paths = {}
    for seed, role in enumerate(("pretrained", "ranker", "domain")):
        paths[role] = args.work / args.dtype / role
        if not (paths[role] / "model.safetensors").exists():
            torch.manual_seed(seed)
            T5ForConditionalGeneration(cfg).to(dtype).save_pretrained(paths[role])
    t = time.perf_counter()
    expected = merge(paths["ranker"], paths["domain"], paths["pretrained"], alpha=0.7).state_dict
    t_merge = time.perf_counter() - t

    t = time.perf_counter()
    model = T5ForConditionalGeneration.from_pretrained(paths["ranker"], dtype=dtype).to("cuda")
    torch.cuda.synchronize()
    t_load = time.perf_counter() - t
    original = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
    model_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
    sweep = AlphaSweep(model, TaskVector.from_checkpoints(paths["domain"], paths["pretrained"]))
    torch.cuda.reset_peak_memory_stats()
    base_mem = torch.cuda.memory_allocated()
    times = []
    for alpha in (0.1, 0.3, 0.5, 0.7):
        torch.cuda.synchronize()
        t = time.perf_counter()
        sweep.set_alpha(alpha)
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    extra = torch.cuda.max_memory_allocated() - base_mem
    state = model.state_dict()
    mismatched = [k for k, v in expected.items() if not torch.equal(state[k].cpu(), v)]
    sweep.set_alpha(0.0)
    state = model.state_dict()
    not_restored = [k for k, v in original.items() if not torch.equal(state[k].cpu(), v)]
    vec_on_cpu = all(t.device.type == "cpu" for t in sweep._tau.values())
    print(f"device: {torch.cuda.get_device_name()}  torch {torch.__version__}  dtype {args.dtype}")
    print(f"model {model_bytes / 1e9:.2f} GB on GPU; extra GPU memory during set_alpha: {extra / 1e6:.0f} MB "
          f"(largest tensor {max(p.numel() * 4 for p in model.parameters()) / 1e6:.0f} MB in float32)")  # fmt: skip
    print(f"task vector on CPU: {vec_on_cpu}")
    print(
        f"set_alpha(0.7) on GPU == CPU streaming merge, bit for bit: {not mismatched} ({len(mismatched)} differ)"
    )
    print(f"set_alpha(0) restores the ranker bit for bit: {not not_restored} ({len(not_restored)} differ)")
    print(f"one α update: {min(times):.3f} s (best of {len(times)}); reload ranker to GPU: {t_load:.3f} s; "
          f"CPU streaming merge in memory: {t_merge:.3f} s")  # fmt: skip


if __name__ == "__main__":
    main()

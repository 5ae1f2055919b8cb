"""Seconds per StackGAN-v2 training step with 1, 2 and 3 branches (64/128/256 px) at the paper's widths
and batch 24, and generation throughput, side by side in one run on random data.

    python benchmarks/gan_step.py                      # the paper's settings (GF_DIM = DF_DIM = 64)
    python benchmarks/gan_step.py --gf 32 --df 32      # the CPU preset's widths (StackGAN/cfg/shapes_cpu.yml)
    python benchmarks/gan_step.py --gf 16 --df 32 --batch 32 --text_dim 1360 --branches 1 --teacher \
        --teacher_layers head,stage4:max,stage3:max     # the demo preset, without and with its teacher loss

A step is what ``StackGAN/trainer.py::train_step`` does: every discriminator's update, the generator's
update with the class-aware loss, and the moving average. ``--teacher`` also times each branch count with
the teacher loss (``--teacher_weight``: the frozen EfficientNet-Lite0 on the last branch) and prints the ratio.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from s2i.features.teachers import Lite0Perception
from StackGAN.trainer import GanState, LossSettings, build_models, generate, train_step


def _batch(branches: int, b: int, text_dim: int) -> dict:
    return {
        "imgs": [torch.rand(b, 3, 64 * 2**i, 64 * 2**i) * 2 - 1 for i in range(branches)],
        "wrong_imgs": [torch.rand(b, 3, 64 * 2**i, 64 * 2**i) * 2 - 1 for i in range(branches)],
        "embedding": torch.randn(b, text_dim),
        "label": torch.arange(b) % 4,
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=24, help="images per step (the birds config: 24)")
    p.add_argument("--gf", type=int, default=64, help="GAN.GF_DIM")
    p.add_argument("--df", type=int, default=64, help="GAN.DF_DIM")
    p.add_argument("--text_dim", type=int, default=1024, help="TEXT.DIMENSION")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant, after one warm-up step")
    p.add_argument("--branches", default="1,2,3", help="branch counts to time")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--teacher", action="store_true", help="also time every step with the teacher loss")
    p.add_argument("--teacher_layers", default="head,stage4:max", help="layers of the teacher loss")
    p.add_argument("--teacher_size", type=int, default=64, help="side the teacher sees the images at")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(os.cpu_count() or 1)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"machine: {name}, {os.cpu_count()} CPU cores, torch {torch.__version__}; batch {args.batch}, "
          f"GF_DIM {args.gf}, DF_DIM {args.df}, TEXT.DIMENSION {args.text_dim}")
    rows = []
    for n in (int(x) for x in args.branches.split(",")):
        for with_teacher in ((False, True) if args.teacher else (False,)):
            torch.manual_seed(0)
            g_args = {"branch_num": n, "gf_dim": args.gf, "text_dim": args.text_dim}
            d_args = [{"resolution": 64 * 2**i, "df_dim": args.df} for i in range(n)]
            G, netsD = build_models(g_args, d_args, device, init=False)
            state = GanState.create(G, netsD, 2e-4, 2e-4)
            batch = {k: ([t.to(device) for t in v] if isinstance(v, list) else v.to(device))
                     for k, v in _batch(n, args.batch, args.text_dim).items()}
            settings = LossSettings(uncond=1.0, kl=2.0, cal=1.0, teacher=1.0 if with_teacher else 0.0)
            teacher = None
            if with_teacher:
                teacher = Lite0Perception(args.teacher_layers, image_size=args.teacher_size).to(device)
                batch["teacher_target"] = torch.rand(args.batch, sum(teacher.dims), device=device)
            kw = {"z_dim": 100, "ema_decay": 0.999, "teacher": teacher}
            train_step(state, batch, settings, device, **kw)  # warm-up
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(state, batch, settings, device, **kw)
            if device.type == "cuda":
                torch.cuda.synchronize()
            step_s = (time.perf_counter() - t0) / args.steps
            if with_teacher:  # generation does not involve the teacher; only the step is compared
                print(f"{n} branch(es) with the teacher loss ({args.teacher_layers} at {args.teacher_size} px): "
                      f"{step_s:8.3f} s/step, x{step_s / rows[-1][2]:.2f} the step without it")
                del G, netsD, state
                continue
            noise, emb = torch.randn(args.batch, 100, device=device), batch["embedding"]
            generate(G, noise, emb)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                generate(G, noise, emb)
            if device.type == "cuda":
                torch.cuda.synchronize()
            gen_ips = args.batch * args.steps / (time.perf_counter() - t0)
            rows.append((n, 64 * 2 ** (n - 1), step_s, gen_ips))
            print(f"{n} branch(es) up to {64 * 2 ** (n - 1)} px: {step_s:8.3f} s/step   generation {gen_ips:8.1f} images/s")
            del G, netsD, state
    base = rows[0][2]
    print("ratios of step time to 1 branch: " + ", ".join(f"{n}: x{s / base:.2f}" for n, _, s, _ in rows))


if __name__ == "__main__":
    main()

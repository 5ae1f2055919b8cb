"""Seconds per StackGAN-v2 training step and generation throughput, fp32 vs bf16 (and channels-last), side
by side in one run on random data: the paper's preset with 1, 2 and 3 branches, and the demo's preset.

    python benchmarks/gan_step.py                            # birds_3stages.yml (GF_DIM = DF_DIM = 64, batch 24)
                                                             # at 1/2/3 branches, and shapes_demo.yml; fp32 vs bf16
    python benchmarks/gan_step.py --channels_last            # also both precisions with channels-last weights
    python benchmarks/gan_step.py --branches 1 --no-demo --steps 1 --warmup 1 --gf 8 --df 8 --batch 4   # a smoke run
    python benchmarks/gan_step.py --gf 32 --df 32 --branches 1,2 --batch 16 --text_dim 1360 --no-demo   # shapes_cpu.yml's widths
    python benchmarks/gan_step.py --branches 1 --teacher --no-demo      # the paper rows with and without the teacher loss

A step is what ``StackGAN/trainer.py::train_step`` does: G's forward pass, every discriminator's update
(forward, backward, Adam), the generator's update through every D (with the class-aware loss), and the
moving average. The settings are read from the presets themselves (``StackGAN/cfg/birds_3stages.yml``,
``shapes_demo.yml``), so the demo row has its auxiliary class loss and its teacher loss. Each variant of a
row gets the same initial weights and batch; after ``--warmup`` steps each, the variants are timed in turn,
``--repeats`` times round, and the best mean of ``--steps`` steps is kept. A precision the device cannot
run natively (``s2i.precision.resolve_precision``) is skipped with the reason.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from s2i.precision import PrecisionError, resolve_precision
from StackGAN.config import load_gan_config
from StackGAN.trainer import GanState, LossSettings, build_models, generate, train_step
from StackGAN.training_loop import loss_settings, model_args

CFG = Path(__file__).resolve().parents[1] / "StackGAN" / "cfg"
SHAPES_CLASSES = 24  # the demo's auxiliary class head: 8 colours x 3 shapes


@dataclass
class Row:
    """One model and loss setting to time in every variant."""

    name: str
    g_args: dict
    d_args: list[dict]
    batch: int
    losses: LossSettings
    teacher: tuple[str, int] | None  # (layers, image size) of the teacher loss, or None


@dataclass
class Variant:
    precision: str
    channels_last: bool

    @property
    def name(self) -> str:
        return self.precision + (" CL" if self.channels_last else "")


def _preset(name: str, *extra: str):
    cfg, _ = load_gan_config(["--cfg", str(CFG / name), *extra])
    return cfg


def rows_from_args(args: argparse.Namespace) -> list[Row]:
    rows = []
    for n in (int(x) for x in args.branches.split(",") if x):
        cfg = _preset("birds_3stages.yml", "--branch_num", str(n), "--GAN.GF_DIM", str(args.gf), "--GAN.DF_DIM",
                      str(args.df), "--TEXT.DIMENSION", str(args.text_dim))
        g, d = model_args(cfg)
        losses = loss_settings(cfg)
        name = f"paper, {n} branch{'es' if n > 1 else ''}"
        rows.append(Row(name, g, d, args.batch or cfg.TRAIN.BATCH_SIZE, losses, None))
        if args.teacher:
            rows.append(Row(name + " + teacher", g, d, args.batch or cfg.TRAIN.BATCH_SIZE,
                            dataclasses.replace(losses, teacher=1.0), (args.teacher_layers, args.teacher_size)))
    if args.demo:
        cfg = _preset("shapes_demo.yml")
        g, d = model_args(cfg, num_classes=SHAPES_CLASSES)
        rows.append(Row(f"demo, {cfg.TREE.BRANCH_NUM} branch", g, d, args.batch or cfg.TRAIN.BATCH_SIZE,
                        loss_settings(cfg), (cfg.teacher_layers, cfg.teacher_size) if cfg.teacher_weight > 0 else None))
    return rows


def _batch(row: Row, device: torch.device) -> dict:
    b, n = row.batch, row.g_args["branch_num"]
    g = torch.Generator().manual_seed(0)
    sizes = [64 * 2**i for i in range(n)]
    batch = {
        "imgs": [torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in sizes],
        "wrong_imgs": [torch.rand(b, 3, s, s, generator=g) * 2 - 1 for s in sizes],
        "embedding": torch.randn(b, row.g_args["text_dim"], generator=g),
        "label": torch.arange(b) % 4,
        "class_index": torch.arange(b) % SHAPES_CLASSES,
        "wrong_class_index": (torch.arange(b) + 1) % SHAPES_CLASSES,
    }
    return {k: ([t.to(device) for t in v] if isinstance(v, list) else v.to(device)) for k, v in batch.items()}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_row(row: Row, variants: list[Variant], args: argparse.Namespace, device: torch.device
             ) -> dict[str, tuple[float, float]]:
    """``{variant name: (seconds per step, generated images per second)}``, best of ``--repeats``."""
    batch = _batch(row, device)
    teacher = None
    if row.teacher is not None:
        from s2i.features.teachers import Lite0Perception

        teacher = Lite0Perception(row.teacher[0], image_size=row.teacher[1]).to(device)
        batch["teacher_target"] = torch.rand(row.batch, sum(teacher.dims), device=device)
    states = {}
    for v in variants:
        torch.manual_seed(0)  # the same initial weights in every variant
        G, netsD = build_models(row.g_args, row.d_args, device, channels_last=v.channels_last)
        states[v.name] = GanState.create(G, netsD, 2e-4, 2e-4, precision=v.precision, channels_last=v.channels_last)
    kw = {"z_dim": row.g_args["z_dim"], "ema_decay": 0.999, "teacher": teacher}
    noise = torch.randn(row.batch, row.g_args["z_dim"], device=device)
    for state in states.values():
        for _ in range(args.warmup):
            train_step(state, batch, row.losses, device, **kw)
        generate(state.G, noise, batch["embedding"], precision=state.precision)
    best = {name: (float("inf"), 0.0) for name in states}
    for _ in range(args.repeats):
        for name, state in states.items():
            _sync(device)
            t0 = time.perf_counter()
            for _ in range(args.steps):
                train_step(state, batch, row.losses, device, **kw)
            _sync(device)
            step_s = (time.perf_counter() - t0) / args.steps
            t0 = time.perf_counter()
            for _ in range(args.steps):
                generate(state.G, noise, batch["embedding"], precision=state.precision)
            _sync(device)
            gen_ips = row.batch * args.steps / (time.perf_counter() - t0)
            best[name] = (min(best[name][0], step_s), max(best[name][1], gen_ips))
    return best


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--branches", default="1,2,3", help="branch counts of the paper preset to time ('' = none)")
    p.add_argument("--demo", action=argparse.BooleanOptionalAction, default=True,
                   help="also time StackGAN/cfg/shapes_demo.yml (with its auxiliary class and teacher losses)")
    p.add_argument("--precisions", default="fp32,bf16", help="precisions to compare; the first is the baseline")
    p.add_argument("--channels_last", action="store_true", help="also time every precision with channels-last weights")
    p.add_argument("--steps", type=int, default=2, help="timed steps per variant and repeat")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per variant first")
    p.add_argument("--repeats", type=int, default=2, help="rounds over the variants; the best round counts")
    p.add_argument("--batch", type=int, default=0, help="images per step (0 = the preset's: 24 paper, 32 demo)")
    p.add_argument("--gf", type=int, default=64, help="GAN.GF_DIM of the paper rows")
    p.add_argument("--df", type=int, default=64, help="GAN.DF_DIM of the paper rows")
    p.add_argument("--text_dim", type=int, default=1024, help="TEXT.DIMENSION of the paper rows")
    p.add_argument("--teacher", action="store_true", help="also time every paper row with the teacher loss")
    p.add_argument("--teacher_layers", default="head,stage4:max", help="layers of that teacher loss")
    p.add_argument("--teacher_size", type=int, default=64, help="side its teacher sees the images at")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu", help="cpu or cuda")
    p.add_argument("--threads", type=int, default=os.cpu_count() or 1, help="torch intra-op threads on the CPU")
    args = p.parse_args(argv)
    device = torch.device(args.device)
    torch.set_num_threads(args.threads)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else (platform.processor() or platform.machine())
    print(f"machine: {name}, {os.cpu_count()} CPU cores, {torch.get_num_threads()} threads, torch {torch.__version__}; "
          f"{args.warmup} warm-up + best of {args.repeats} x {args.steps} timed steps per variant")
    precisions = []
    for prec in args.precisions.split(","):
        try:
            precisions.append(resolve_precision(prec, device))
        except PrecisionError as exc:
            print(f"skipped {prec}: {exc}")
    variants = [Variant(prec, cl) for cl in ((False, True) if args.channels_last else (False,)) for prec in precisions]
    base = variants[0].name
    results = []
    for row in rows_from_args(args):
        t0 = time.perf_counter()
        res = time_row(row, variants, args, device)
        results.append((row, res))
        print(f"  {row.name}: " + ", ".join(f"{k} {s:.3f} s/step" for k, (s, _) in res.items())
              + f"  ({time.perf_counter() - t0:.0f} s)", flush=True)

    def table(title: str, col: int, unit: str, faster) -> None:
        head = [f"{v.name} {unit}" for v in variants] + [f"{v.name} speed-up" for v in variants[1:]]
        print(f"\n{title}\n| setting | px | batch | " + " | ".join(head) + " |")
        print("|---|---|---|" + "---|" * len(head))
        for row, res in results:
            vals = [res[v.name][col] for v in variants]
            ratios = [faster(vals[0], x) for x in vals[1:]]
            px = 64 * 2 ** (row.g_args["branch_num"] - 1)
            print(f"| {row.name} | {px} | {row.batch} | " + " | ".join(f"{x:.3f}" if col == 0 else f"{x:.1f}" for x in vals)
                  + "".join(f" | x{r:.2f}" for r in ratios) + " |")

    table(f"training step (speed-up: {base}'s seconds per step / the variant's; > 1 = faster)", 0, "s/step",
          lambda b, x: b / x)
    table(f"generation, G alone in eval mode (speed-up: the variant's images/s / {base}'s)", 1, "images/s",
          lambda b, x: x / b)
    paper = [(row, res[base][0]) for row, res in results if row.name.startswith("paper") and row.teacher is None]
    if len(paper) > 1:
        print(f"\n{base} step time relative to {paper[0][0].name}: "
              + ", ".join(f"{row.g_args['branch_num']}: x{s / paper[0][1]:.2f}" for row, s in paper))


if __name__ == "__main__":
    main()

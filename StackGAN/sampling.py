"""Stage F's generation: a trained generator's images of every test caption (docs/original.md#s11-7).

``StackGAN/main.py`` with TRAIN.FLAG False calls :func:`generate_test_set`; ``speech_to_image.py`` loads
its generator with :func:`load_generator_for_eval` and draws with :func:`sample_images`. The flat folders' file names come from
:mod:`s2i.data.naming`, which stage F's scoring parses.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader
from tqdm import tqdm

from s2i import distributed
from s2i.checkpoints import load_checkpoint
from s2i.config import ConfigError
from s2i.data.naming import generated_name
from s2i.grids import save_png, to_uint8
from s2i.precision import autocast, resolve_precision
from StackGAN.config import GanConfig
from StackGAN.datasets import dataset_from_config
from StackGAN.model import G_NET, load_original_generator
from StackGAN.trainer import generate


def load_generator_for_eval(path: str | Path, device: torch.device, overrides: dict | None = None, *,
                            channels_last: bool = False) -> tuple[G_NET, int]:
    """The averaged G of our snapshot, or an original ``netG_<N>.pth``, in eval mode on ``device`` (its
    weights float32; channels-last with ``channels_last``); returns (G, step)."""
    ckpt = load_checkpoint(path)
    if ckpt.get("format") == "s2i.stackgan.v1":
        G = G_NET(**ckpt["G_args"], init_weights=False)
        G.load_state_dict(ckpt["G_ema"], strict=True)
        step = int(ckpt["step"])
    else:
        G = load_original_generator(path, **(overrides or {}))
        match = re.search(r"netG_(\d+)\.pth$", str(path))
        step = int(match.group(1)) if match else 0
    G = G.to(device)
    if channels_last:
        G = G.to(memory_format=torch.channels_last)
    return G.eval(), step


def generate_test_set(cfg: GanConfig, dist: distributed.DistInfo) -> dict:
    """One image per caption of every test image, at every branch's resolution (docs/original.md#s11-7), reproducible
    for a given seed: the original's layout under ``<dir of NET_G>/iteration<N>/single_samples/valid/``
    and one flat folder per resolution for FID tools.

    Each batch's embeddings ``(B, C, D)`` give, per caption ``i`` and sample ``k``, noise ``(B, z_dim)``
    drawn after ``torch.manual_seed(hash((seed, batch, i, k)) % 2**31)`` and one ``(B, 3, r, r)`` image
    batch per resolution ``r``. G runs under ``--precision``'s autocast; the PNGs are 8-bit as always (from
    float32 images). Only rank 0 writes; the others return ``{}``.
    """
    if not cfg.TRAIN.NET_G:
        raise ConfigError("evaluation needs a generator: pass --eval_net_g PATH (or TRAIN.NET_G in the --cfg file)")
    precision = resolve_precision(cfg.precision, dist.device)
    G, step = load_generator_for_eval(cfg.TRAIN.NET_G, dist.device,
                                      {"branch_num": cfg.TREE.BRANCH_NUM, "text_dim": cfg.TEXT.DIMENSION},
                                      channels_last=cfg.channels_last)
    ds = dataset_from_config(cfg)
    out = Path(cfg.TRAIN.NET_G).parent / f"iteration{step}"
    if not dist.is_main:
        return {}
    cuda = dist.device.type == "cuda"
    loader = DataLoader(ds, batch_size=cfg.TRAIN.BATCH_SIZE, shuffle=False, num_workers=min(cfg.WORKERS, 8),
                        pin_memory=cuda)
    written = 0
    res = [cfg.TREE.BASE_SIZE * 2**i for i in range(G.args["branch_num"])]
    for b, batch in enumerate(tqdm(loader, desc="generate", disable=not cfg.progress)):
        embs = batch["embeddings"].to(dist.device, non_blocking=cuda)  # (B, C, D)
        for i in range(embs.shape[1]):
            for k in range(cfg.eval_samples_per_caption):
                torch.manual_seed(hash((cfg.seed, b, i, k)) % (2**31))
                noise = torch.randn(embs.shape[0], G.args["z_dim"], device=dist.device)
                with torch.no_grad(), autocast(precision, dist.device):
                    imgs, _, _ = G(noise, embs[:, i])
                for r, img in zip(res, imgs):
                    arrs = to_uint8(img)
                    for j, key in enumerate(batch["key"]):
                        pic = Image.fromarray(arrs[j])
                        save_png(pic, out / "single_samples" / "valid" / f"{key}_{r}_sentence{i}_{k}.png")
                        save_png(pic, out / f"flat_{r}" / generated_name(key, i, k))
                        written += 1
    summary = {"generator": str(cfg.TRAIN.NET_G), "step": step, "images": written, "out": str(out),
               "resolutions": res, "precision": precision}
    print(f"generated {written} images ({len(ds)} test images x {ds.captions_per_image} captions x "
          f"{len(res)} resolutions) under {out}")
    return summary


def sample_seed(seed: int, k: int) -> int:
    """The torch seed of sample ``k`` under ``--seed seed`` (numpy's SeedSequence: well mixed, no
    collisions such as seed + k would give between (0, 1) and (1, 0))."""
    return int(np.random.SeedSequence([seed, k]).generate_state(1, dtype=np.uint64)[0] % (2**63))


@torch.no_grad()
def sample_images(G: G_NET, emb: torch.Tensor, seed: int, samples: int = 1, precision: str = "fp32") -> torch.Tensor:
    """``(1, D)`` embedding → ``(samples, 3, R, R)`` float32 images in [−1, 1] at G's largest resolution, G
    running under ``precision``'s autocast (a resolved precision).

    Sample ``k`` uses the torch seed :func:`sample_seed` ``(seed, k)`` for its noise and its
    conditioning-augmentation draw (which the original samples in eval mode too, docs/original.md#s11-7), inside a
    forked RNG: the caller's RNG state is untouched, and the images depend on the seed, the sample index,
    the embedding and the device, not on how many inputs or samples one run has. Sample ``k`` of two
    inputs shares its noise, so their pictures differ by what was said.
    """
    device = emb.device
    out = []
    devices = [device] if device.type == "cuda" else []
    for k in range(samples):
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(sample_seed(seed, k))
            noise = torch.randn(1, G.z_dim, device=device)
            out.append(generate(G, noise, emb, precision=precision)[-1])
    return torch.cat(out)

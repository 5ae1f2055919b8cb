"""Stage C: train the CNN+BiLSTM speech encoder against fixed teacher image features (docs/original.md#s6 to #s9).

Single process:   python Audio_to_Image/train_audio_encoder.py --dataset birds --jel_flag ...
Several:          ./run_audio_encoder.sh NPROC --dataset birds ...   (torchrun; gloo on CPU, NCCL on CUDA)

Every flag of the original keeps its name and default (docs/original.md#s13). Settings come from the defaults of
:class:`EncoderTrainConfig` (``Audio_to_Image/training_config.py``), then ``--config FILE`` (YAML), then the
flags given. The run itself, step by step: ``Audio_to_Image/training_loop.py``.

Ctrl-C (or SIGTERM) finishes the current batch, saves ``latest.pth`` part-way through the epoch and exits
with status 130 (143); ``--resume <run>/latest.pth`` continues with the next batch, exactly.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path

from Audio_to_Image.training_config import EncoderTrainConfig
from Audio_to_Image.training_loop import train_speech_encoder
from s2i.cli import run_cli
from s2i.config import parse_config
from s2i.distributed import run_distributed

__all__ = ["EncoderTrainConfig", "cli", "main"]


def main(argv: list[str] | None = None) -> dict:
    """Parses the settings, joins the torchrun process group (if any) and trains; returns the run's summary."""
    cfg, ns = parse_config(EncoderTrainConfig, argv, __doc__.splitlines()[0])
    if cfg.resume and "output_dir" not in vars(ns) and cfg.output_dir == EncoderTrainConfig.output_dir:
        cfg = dataclasses.replace(cfg, output_dir=str(Path(cfg.resume).parent))
    return run_distributed(functools.partial(train_speech_encoder, cfg), cfg.device, cfg.local_rank)


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()

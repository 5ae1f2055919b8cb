"""Stage E/F: train StackGAN-v2 on speech embeddings, or generate the test set (docs/original.md#s11).

Train:     python StackGAN/main.py --cfg ./StackGAN/cfg/birds_3stages.yml --output_dir birds_speech_encoder \
               --audio_switch googlenet_caffe --data_dir ./data/birds --branch_num 3
Several:   ./run_generator.sh NPROC --cfg ...            (torchrun; gloo on CPU, NCCL on CUDA)
Generate:  python StackGAN/main.py --cfg ./StackGAN/cfg/eval_birds.yml --audio_switch googlenet_caffe \
               --data_dir ./data/birds --eval_net_g ./output/StackGAN/birds_speech_encoder/Model/netG_220000.pth

Settings: defaults ← ``--cfg FILE`` (the original's YAML keys) ← flags.

``--precision bf16`` (or ``auto``, as the shapes presets set it) runs G and the discriminators under autocast
where the device computes bf16 natively; ``fp32``, the default, is the original's arithmetic (docs/stages.md,
"Precision").

Ctrl-C (or SIGTERM) finishes the current step, saves a snapshot at that step and exits with status 130
(143); ``--resume <run>/Model/latest.pth`` continues exactly.

The work lives in the library: ``StackGAN/training_loop.py`` (TRAIN.FLAG True) and ``StackGAN/sampling.py``
(TRAIN.FLAG False).
"""

from __future__ import annotations

from s2i.cli import run_cli
from s2i.distributed import run_distributed
from StackGAN.config import device_name, load_gan_config
from StackGAN.sampling import generate_test_set
from StackGAN.training_loop import train


def main(argv: list[str] | None = None) -> dict:
    """Parses ``argv`` (None = ``sys.argv[1:]``), then trains or generates on the resolved device, inside
    the process group of a torchrun launch; returns the run's summary."""
    cfg, _ = load_gan_config(argv, __doc__.splitlines()[0])
    stage = train if cfg.TRAIN.FLAG else generate_test_set
    return run_distributed(lambda dist: stage(cfg, dist), device_name(cfg), cfg.local_rank)


def cli() -> None:
    run_cli(main)


if __name__ == "__main__":
    cli()

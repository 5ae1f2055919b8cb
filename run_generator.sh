#!/usr/bin/env bash
# StackGAN-v2 training with torchrun: ./run_generator.sh NPROC [StackGAN/main.py flags...]
# See s2i/torchrun.sh for the multi-node variables; the console also goes to output/StackGAN/log.txt.
cd "$(dirname "$0")"
source s2i/torchrun.sh
torchrun_stage ./output/StackGAN ./StackGAN/main.py "$@"

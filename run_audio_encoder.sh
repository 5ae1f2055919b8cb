#!/usr/bin/env bash
# Speech-encoder training with torchrun: ./run_audio_encoder.sh NPROC [train_audio_encoder.py flags...]
# See s2i/torchrun.sh for the multi-node variables; the console also goes to output/Audio_to_Image/log.txt.
cd "$(dirname "$0")"
source s2i/torchrun.sh
torchrun_stage ./output/Audio_to_Image ./Audio_to_Image/train_audio_encoder.py "$@"

"""The speech encoder's training settings: every flag of ``Audio_to_Image/train_audio_encoder.py``.

The typed defaults of the stage in one place (STYLE, Config); ``s2i.config.parse_config`` lays the
``--config`` YAML and the command line over them. The original's flags keep their names and defaults
(docs/original.md#s13); the training loop (``Audio_to_Image/training_loop.py``) reads the config, never the flags.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.augment import SpecAugmentConfig
from Audio_to_Image.losses import LossWeights
from s2i.config import option, require
from s2i.data.manifests import DATA_ROOTS, DATASETS
from s2i.precision import PRECISIONS


@dataclass
class EncoderTrainConfig:
    """One speech-encoder training run: the flags, the keys of a ``--config`` YAML and a checkpoint's ``config``."""

    # --- the original's flags (docs/original.md#s13), same names and defaults ---
    local_rank: int = option(0, "process index on this node; torchrun's LOCAL_RANK takes precedence",
                             flags=("--local-rank",))
    num_workers: int = option(8, "data-loader worker processes (capped at the CPU count)")
    resume: str | None = option(None, "checkpoint to continue from (ours or the authors' epoch_N.pth)")
    data_path: str = option("./data/birds/CUB_200_2011_audio/audio/0", "unused; kept so old commands parse")
    output_dir: str = option("./output/Audio_to_Image/log/baseline", "run folder for logs and checkpoints")
    batch_size: int = option(64, "samples per process and step")
    epoch: int = option(100, "total number of epochs")
    learning_rate: float = option(1e-3, "Adam learning rate")
    print_every: int = option(50, "iterations between status lines")
    eval_every: int = option(5, "epochs between evaluations (the last epoch is always evaluated)")
    loss_diff: float = option(1.0, "JEL weight of different-class pairs")
    loss_same: float = option(1.0, "JEL weight of same-class pairs")
    lr_scheduler_step_size: int = option(30, "StepLR step in epochs")
    lr_scheduler_gamma: float = option(0.2, "StepLR factor")
    dataset: str = option("birds", "which manifest schema and data root", choices=DATASETS)
    jel_flag: bool = option(False, "use the joint embedding loss")
    l1_flag: bool = option(False, "use the L1 loss on globally normalised features")
    distill_flag: bool = option(False, "use the distillation (KL) loss")
    lambda_l1: float = option(1.0, "weight of the L1 loss")
    lambda_distill: float = option(1.0, "weight of the distillation loss")
    distill_T: float = option(2.0, "temperature applied to the teacher in distillation")
    proto_flag: bool = option(False, "ours, not the paper's: add a cross-entropy over the cosine similarity to "
                              "each training class's mean teacher feature (learns much faster on small budgets)")
    lambda_proto: float = option(1.0, "weight of the prototype loss")
    proto_T: float = option(0.1, "temperature of the prototype loss's softmax")
    dropout: float = option(0.5, "LSTM dropout between layers (no effect with one layer, as in the original)")
    bidirectional: bool = option(False, "bidirectional LSTM (the paper's README turns it on)")
    rnn_layers: int = option(1, "stacked LSTM layers")
    # --- new in this reproduction ---
    device: str = option("auto", "auto = cuda when available, else cpu", choices=("auto", "cpu", "cuda"))
    data_root: str | None = option(None, "dataset folder (default ./data/<dataset>)")
    train_json: str | None = option(None, "training manifest (default <data_root>/train.json)")
    test_json: str | None = option(None, "evaluation manifest (default <data_root>/test.json)")
    embedding_dim: int = option(1024, "speech-embedding size; must equal the teacher feature size")
    input_dropout: float = option(0.0, "dropout on the LSTM input, which acts with one layer too (0 = original)")
    weight_decay: float = option(1e-5, "Adam's (coupled L2) weight decay")
    seed: int = option(1234, "seed of initialisation and of every random choice of the data")
    feature_cache: str = option("on", "reuse log-mels computed once per clip (off = decode every sample, "
                                "as the original)", choices=("on", "off"))
    feature_cache_dir: str | None = option(None, "log-mel cache folder (default <data_root>/feature_cache)")
    reshuffle_each_epoch: bool = option(True, "call DistributedSampler.set_epoch (False = the original's "
                                        "identical order every epoch)")
    bucket_by_length: bool = option(False, "batches of clips of similar length, each cut to the frames its "
                                    "longest clip can influence (faster; off in the paper presets because "
                                    "BatchNorm's training statistics then see less padding than the original's)")
    precision: str = option("fp32", "arithmetic of the encoder's forward/backward: fp32 (the original), bf16 "
                            "(where native), fp16 (CUDA, with a gradient scaler), auto (bf16 where native, else "
                            "fp32); weights, optimizer and losses stay float32", choices=PRECISIONS)
    recall_topk: int = option(50, "k of the paper's precision@k ('ap50')")
    tensorboard: bool = option(True, "also log to TensorBoard when it is installed")
    progress: bool = option(True, "show progress bars")
    frontend: FrontEndConfig = dataclasses.field(default_factory=FrontEndConfig)
    augment: SpecAugmentConfig = dataclasses.field(default_factory=SpecAugmentConfig)

    def __post_init__(self) -> None:
        checks = [
            (self.batch_size >= 1, "--batch_size must be at least 1"),
            (self.epoch >= 1, "--epoch must be at least 1"),
            (self.eval_every >= 1, "--eval_every must be at least 1"),
            (self.learning_rate > 0, "--learning_rate must be positive"),
            (self.rnn_layers >= 1, "--rnn_layers must be at least 1"),
            (0 <= self.dropout < 1 and 0 <= self.input_dropout < 1, "dropouts must lie in [0, 1)"),
            (self.embedding_dim % (2 if self.bidirectional else 1) == 0,
             "--embedding_dim must be even with --bidirectional"),
            (self.frontend.target_length >= 64, "frontend.target_length must be at least 64 frames"),
        ]
        require(checks)

    @property
    def root(self) -> Path:
        """The dataset folder: ``--data_root``, else ``./data/<dataset>``."""
        return Path(self.data_root or DATA_ROOTS[self.dataset])

    def loss_weights(self) -> LossWeights:
        """The loss switches, weights and temperatures as :class:`Audio_to_Image.losses.LossWeights`."""
        return LossWeights(self.jel_flag, self.loss_diff, self.loss_same, self.l1_flag, self.lambda_l1,
                           self.distill_flag, self.lambda_distill, self.distill_T, self.proto_flag,
                           self.lambda_proto, self.proto_T)

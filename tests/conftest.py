import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from s2i.data.synthetic import SyntheticSpec, make_dataset, make_tiny_gan_dataset

REPO = Path(__file__).resolve().parents[1]

# Tests are small; more intra-op threads than cores only adds contention on the 2-core CI machine.
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def toy_dataset(tmp_path_factory) -> Path:
    """4 classes x (6 train, 3 test) images x 3 spoken captions of 1-3 s, 1024-d teacher features."""
    root = tmp_path_factory.mktemp("toy")
    make_dataset(root, SyntheticSpec())
    return root


@pytest.fixture
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def train_args(data_root: Path, out: Path, *extra: str) -> list[str]:
    """The paper's loss settings on the toy set, sized for a CPU test (short spectrograms, small batches)."""
    return [
        "--data_root", str(data_root), "--output_dir", str(out),
        "--jel_flag", "--l1_flag", "--distill_flag", "--loss_diff", "1", "--loss_same", "0.1",
        "--lambda_l1", "5", "--lambda_distill", "1000", "--bidirectional",
        "--batch_size", "8", "--num_workers", "0", "--frontend.target_length", "320",
        "--no-progress", "--print_every", "1000", *extra,
    ]


PYTHON = sys.executable


@pytest.fixture(scope="session")
def tiny_gan_data(tmp_path_factory) -> Path:
    """3 classes x 6 images, 2 captions each, 24-d class-carrying embeddings (s2i.data.synthetic.make_tiny_gan_dataset)."""
    return make_tiny_gan_dataset(tmp_path_factory.mktemp("gan") / "tiny")


def gan_args(data: Path, out: Path, *extra: str) -> list[str]:
    """A 2-branch (64/128 px) StackGAN-v2 shrunk for a CPU test: 4 steps per epoch."""
    return [
        "--data_dir", str(data), "--dataset", "birds", "--audio_switch", "t", "--output_dir", str(out),
        "--WORKERS", "0", "--TREE.BRANCH_NUM", "2", "--TRAIN.BATCH_SIZE", "4", "--TRAIN.VIS_COUNT", "4",
        "--TRAIN.MAX_EPOCH", "3", "--TRAIN.SNAPSHOT_INTERVAL", "5", "--TRAIN.LOG_INTERVAL", "1",
        "--TRAIN.COEFF.UNCOND_LOSS", "1.0", "--TRAIN.COEFF.CAL_LOSS", "50.0", "--GAN.DF_DIM", "8",
        "--GAN.GF_DIM", "8", "--GAN.EMBEDDING_DIM", "16", "--GAN.Z_DIM", "10", "--GAN.R_NUM", "1",
        "--TEXT.DIMENSION", "24", "--no-progress", *extra,
    ]


def assert_same_gan_snapshot(a: dict, b: dict) -> None:
    """Two StackGAN snapshots hold the same step and bit-identical G, moving average, Ds and optimizer states."""
    assert a["step"] == b["step"]
    for key in ("G", "G_ema"):
        for k in a[key]:
            assert torch.equal(a[key][k], b[key][k]), (key, k)
    for da, db in zip(a["D"], b["D"]):
        for k in da:
            assert torch.equal(da[k], db[k]), k
    for oa, ob in zip([a["optG"], *a["optD"]], [b["optG"], *b["optD"]]):
        for i, s in oa["state"].items():
            for k, v in s.items():
                assert torch.equal(v, ob["state"][i][k]), (i, k)


@pytest.fixture(scope="session")
def constant_attribute_classifier():
    """Makes a shapes attribute classifier that answers (colour, shape) for every image: zero head weights,
    one large bias."""
    from s2i.evaluation.attribute_classifier import AttributeClassifier

    def make(colour: str, shape: str) -> AttributeClassifier:
        clf = AttributeClassifier(width=4)
        with torch.no_grad():
            for head, names, name in ((clf.colour_head, clf.colours, colour), (clf.shape_head, clf.shapes, shape)):
                head.weight.zero_()
                head.bias.zero_()
                head.bias[names.index(name)] = 10.0
        return clf.eval()

    return make

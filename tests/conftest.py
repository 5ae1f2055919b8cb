import os
import socket
import sys
from pathlib import Path

import pytest
import torch

from s2i.synthetic import SyntheticSpec, make_dataset

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

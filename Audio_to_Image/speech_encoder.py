"""The CNN+BiLSTM speech encoder ``CNNRNN`` (docs/original.md#s5).

Layer table, initialisation and state_dict keys (``Conv.N.*``, ``RNN.*``) follow the original, so the
authors' ``epoch_N.pth`` files load with ``strict=True``. Fixed against the original (docs/original.md#bug-11):
a batch of one keeps its batch dimension, ``rnn_layers > 1`` works, and ``input_dropout`` gives a
dropout that acts even with one LSTM layer (``drop_prob`` keeps its original meaning: PyTorch's
between-layer LSTM dropout, which does nothing with one layer).
"""

from __future__ import annotations

import warnings

import torch
import torch.nn as nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

# (in, out, kernel over time, stride over time, padding over time) of the conv blocks after the first,
# with "pool" marking the two max-pools; indices match the original's nn.Sequential (docs/original.md#s5 table).
_TEMPORAL_BLOCKS: list[tuple[int, int, int, int, int] | str] = [
    (64, 64, 3, 1, 1),  # Conv.2
    "pool",  # Conv.3
    (64, 128, 17, 2, 8),  # Conv.4
    (128, 256, 13, 2, 6),  # Conv.5
    (256, 256, 3, 1, 1),  # Conv.6
    (256, 512, 9, 2, 4),  # Conv.7
    "pool",  # Conv.8
    (512, 512, 3, 1, 1),  # Conv.9
    (512, 1024, 5, 2, 2),  # Conv.10 (its 1024 is ``embedding_dim``)
]
TIME_REDUCTION = 64
"""Frames per encoder step: the conv stack halves the time axis six times (2048 → 32)."""


def _conv_bn_relu(cin: int, cout: int, kernel: tuple[int, int], stride: tuple[int, int], pad: tuple[int, int]):
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, stride, pad, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def encoder_steps(n_frames: torch.Tensor, max_steps: int) -> torch.Tensor:
    """Valid encoder steps for valid frame counts: ``n_frames // 64`` clamped to ``[1, max_steps]``.

    The original fed ``n_frames // 64`` and had to keep clips shorter than 64 frames away from the
    model (length 0 crashes packing, docs/original.md#bug-13); clamping to one step handles them per clip.
    """
    return torch.clamp(n_frames // TIME_REDUCTION, min=1, max=max_steps)


class CNNRNN(nn.Module):
    """Log-mel spectrogram → word-level features and a sentence embedding.

    Args:
        n_filters: mel bands of the input (40).
        embedding_dim: channels of the last conv block, i.e. the LSTM's input size (1024).
        drop_prob: the original's LSTM dropout between layers (no effect with ``rnn_layers=1``).
        nhidden: LSTM output size summed over directions (1024 → 512 per direction when bidirectional);
            this is the sentence-embedding size and must equal the teacher's feature size.
        nsent: accepted for signature compatibility with the original; unused there too.
        bidirectional: BiLSTM (the README setting) or one direction.
        rnn_layers: stacked LSTM layers.
        input_dropout: dropout on the conv features fed to the LSTM; 0 reproduces the original.
    """

    def __init__(
        self,
        n_filters: int = 40,
        embedding_dim: int = 1024,
        drop_prob: float = 0.5,
        nhidden: int = 1024,
        nsent: int = 1024,
        bidirectional: bool = True,
        rnn_layers: int = 1,
        input_dropout: float = 0.0,
    ) -> None:
        super().__init__()
        num_dirs = 2 if bidirectional else 1
        if nhidden % num_dirs:
            raise ValueError(f"nhidden ({nhidden}) must be divisible by the number of directions ({num_dirs})")
        if rnn_layers < 1:
            raise ValueError(f"rnn_layers must be at least 1, got {rnn_layers}")
        self.n_filters = n_filters
        self.embedding_dim = embedding_dim
        self.nhidden = nhidden
        self.num_dirs = num_dirs
        self.rnn_layers = rnn_layers

        layers: list[nn.Module] = [nn.BatchNorm2d(1), _conv_bn_relu(1, 64, (n_filters, 1), (1, 1), (0, 0))]
        for i, spec in enumerate(_TEMPORAL_BLOCKS):
            if spec == "pool":
                layers.append(nn.MaxPool2d((1, 3), (1, 2), (0, 1)))
                continue
            cin, cout, k, s, p = spec
            if i == len(_TEMPORAL_BLOCKS) - 1:
                cout = embedding_dim
            layers.append(_conv_bn_relu(cin, cout, (1, k), (1, s), (0, p)))
        self.Conv = nn.Sequential(*layers)
        self.input_dropout = nn.Dropout(input_dropout) if input_dropout > 0 else nn.Identity()
        with warnings.catch_warnings():
            # With one layer PyTorch warns that drop_prob does nothing; that is the original's setting.
            warnings.simplefilter("ignore", UserWarning)
            self.RNN = nn.LSTM(
                embedding_dim,
                nhidden // num_dirs,
                num_layers=rnn_layers,
                batch_first=True,
                bidirectional=bidirectional,
                dropout=drop_prob if rnn_layers > 1 else 0.0,
            )
        self.apply(_init_weights)

    def steps_for(self, n_time: int) -> int:
        """Encoder steps produced for ``n_time`` input frames (2048 → 32)."""
        t = n_time
        for m in self.Conv:
            conv = m[0] if isinstance(m, nn.Sequential) else m
            if isinstance(conv, (nn.Conv2d, nn.MaxPool2d)):
                k, s, p = (_pair(conv.kernel_size)[1], _pair(conv.stride)[1], _pair(conv.padding)[1])
                t = (t + 2 * p - k) // s + 1
        return t

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, full_steps: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """
        Args:
            x: log-mel spectrograms ``(B, n_filters, T)``, T = 2048 in the paper.
            lengths: valid encoder steps per clip ``(B,)`` in ``[1, T/64]`` (see :func:`encoder_steps`).
            full_steps: for an input cut short of its nominal length (a length-bucketed batch, see
                ``Audio_to_Image/embedding.py``): the encoder steps of the nominal input (32 for 2048
                frames). The sentence embedding is then the sum of the valid steps divided by it, which is
                what the mean over the nominal steps gives, since the LSTM outputs past a clip's length are
                zeros. None (the default): the mean over the steps of ``x`` itself.
        Returns:
            ``words_emb (B, nhidden, T/64)`` (zeros past each length) and ``sent_emb (B, nhidden)``,
            the mean over **all** T/64 steps, padding included (docs/original.md#s5 / §14 #12, kept for parity),
            or over ``full_steps`` when given.
        """
        if x.dim() != 3 or x.shape[1] != self.n_filters:
            raise ValueError(f"CNNRNN expects (B, {self.n_filters}, T) spectrograms, got {tuple(x.shape)}")
        h = self.Conv(x.unsqueeze(1))  # (B, E, 1, T/64)
        h = h.squeeze(2).transpose(1, 2)  # (B, T/64, E); squeeze(2) keeps B = 1
        h = self.input_dropout(h)
        steps = h.shape[1]
        lengths = lengths.to("cpu", torch.int64)
        if int(lengths.min()) < 1 or int(lengths.max()) > steps:
            raise ValueError(f"lengths must lie in [1, {steps}] encoder steps, got {lengths.tolist()}")
        packed = pack_padded_sequence(h, lengths, batch_first=True, enforce_sorted=False)
        out, _ = self.RNN(packed)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=steps)  # (B, T/64, nhidden)
        words_emb = out.transpose(1, 2)
        if full_steps is None:
            sent_emb = out.mean(dim=1)
        else:
            if full_steps < steps:
                raise ValueError(f"full_steps ({full_steps}) is fewer than the {steps} steps of the input")
            sent_emb = out.sum(dim=1) / full_steps
        return words_emb, sent_emb


def _pair(v):
    return v if isinstance(v, tuple) else (v, v)


def _init_weights(m: nn.Module) -> None:
    """Conv and Linear weights ~ N(0, 0.02); BatchNorm weight ~ N(1, 0.02), bias 0 (docs/original.md#s5). LSTM: PyTorch default."""
    name = type(m).__name__
    if name.startswith("Conv") or isinstance(m, nn.Linear):
        nn.init.normal_(m.weight, 0.0, 0.02)
        if getattr(m, "bias", None) is not None:
            nn.init.zeros_(m.bias)
    elif name.startswith("BatchNorm"):
        nn.init.normal_(m.weight, 1.0, 0.02)
        nn.init.zeros_(m.bias)


def model_args_from(cfg) -> dict:
    """Constructor arguments of :class:`CNNRNN` for a training config (stored in every checkpoint)."""
    return {
        "n_filters": cfg.frontend.n_mels,
        "embedding_dim": cfg.embedding_dim,
        "drop_prob": cfg.dropout,
        "nhidden": cfg.embedding_dim,
        "nsent": cfg.embedding_dim,
        "bidirectional": cfg.bidirectional,
        "rnn_layers": cfg.rnn_layers,
        "input_dropout": cfg.input_dropout,
    }


def infer_model_args(state: dict) -> dict:
    """Architecture of a CNNRNN state dict: mel count, embedding size, directions and LSTM layers."""
    try:
        n_filters = int(state["Conv.1.0.weight"].shape[2])
        embedding_dim = int(state["Conv.10.0.weight"].shape[0])
        hidden = int(state["RNN.weight_hh_l0"].shape[1])
    except KeyError as exc:
        raise ValueError(f"not a CNNRNN state dict: no {exc.args[0]!r}") from None
    bidirectional = "RNN.weight_hh_l0_reverse" in state
    layers = 1 + max(int(k.split("_l")[1].split("_")[0]) for k in state if k.startswith("RNN.weight_hh_l"))
    nhidden = hidden * (2 if bidirectional else 1)
    return {
        "n_filters": n_filters,
        "embedding_dim": embedding_dim,
        "nhidden": nhidden,
        "nsent": nhidden,
        "bidirectional": bidirectional,
        "rnn_layers": layers,
    }


def load_speech_encoder(path, map_location="cpu", overrides: dict | None = None) -> tuple[CNNRNN, dict]:
    """Rebuilds a :class:`CNNRNN` from a checkpoint and loads it strictly.

    Our checkpoints carry ``model_args``. The authors' ``epoch_N.pth`` (``{'meta', 'state_dict'}``, keys
    with or without ``module.``) do not; their architecture is read off the weights' shapes, and
    ``overrides`` (e.g. the original's ``--bidirectional``/``--rnn_layers`` flags) are checked against it
    by the strict load.

    Returns:
        (model in eval mode, the checkpoint dict).
    """
    from s2i.checkpoints import CheckpointError, extract_state_dict, load_checkpoint, load_weights

    ckpt = load_checkpoint(path, map_location=map_location)
    state = extract_state_dict(ckpt, path)
    try:
        args = dict(ckpt.get("model_args") or infer_model_args(state))
    except ValueError as exc:
        raise CheckpointError(f"checkpoint {path}: {exc}") from None
    args.update(overrides or {})
    model = CNNRNN(**args)
    load_weights(model, state, path)
    model.eval()
    return model, ckpt

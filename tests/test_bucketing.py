"""Length-bucketed encoder training (``--bucket_by_length``) and mixed precision (``--precision``): the exact cut,
the sampler, the planned lengths, and runs with the options off, on, stopped and resumed."""

from __future__ import annotations

import signal

import numpy as np
import pytest
import torch
from torch.utils.data import default_collate

from Audio_to_Image import train_audio_encoder, training_loop
from Audio_to_Image.audio import FrontEndConfig
from Audio_to_Image.datasets import CutToLongest, SpeechImageDataset, load_teacher_features
from Audio_to_Image.embedding import frames_needed_table
from Audio_to_Image.losses import LossWeights
from Audio_to_Image.speech_encoder import CNNRNN, encoder_steps
from Audio_to_Image.trainer import TrainSetup, train_one_epoch
from s2i.data.manifests import load_manifest
from s2i.distributed import LengthBucketSampler
from s2i.interrupt import StopRequest, TrainingInterrupted
from s2i.precision import NATIVE_BF16_FLAGS, PrecisionError, grad_scaler, native_bf16
from s2i.runs import read_jsonl
from tests.conftest import train_args

# --- the cut ----------------------------------------------------------------------------------------


def _calibrated_encoder() -> CNNRNN:
    """The paper's encoder with BatchNorm statistics of log-mel-like inputs (PyTorch's initial ones shrink
    the activations layer by layer, so every embedding would be near zero and the comparison say nothing)."""
    torch.manual_seed(0)
    model = CNNRNN(bidirectional=True)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = None
    x = torch.zeros(8, 40, 2048)
    for i, n in enumerate(torch.randint(150, 700, (8,)).tolist()):
        x[i, :, :n] = -80 * torch.rand(40, n)
    with torch.no_grad():
        model.train()(x, torch.full((8,), 3))
    return model.eval()


def _sample(n_frames: int, index: int, gen: torch.Generator, target: int = 2048, dim: int = 1024) -> dict:
    spec = torch.zeros(40, target)  # 0 dB padding, as the front-end pads
    spec[:, :n_frames] = -80 * torch.rand(40, n_frames, generator=gen)
    return {"image_feat": torch.rand(dim, generator=gen), "spec": spec, "n_frames": n_frames, "label": index % 3,
            "index": index}


def test_cut_batch_gives_the_full_length_sentence_embeddings():
    """In eval mode a batch cut to its longest clip's receptive field, averaged over the nominal 32 steps,
    gives the 2048-frame batch's sentence embeddings. Measured on the project's 2-core Xeon (torch 2.13 CPU,
    embeddings up to 0.15-0.57 in size): identical bits (max |diff| 0) for this batch and two others, cut to
    704, 768 and 2048 frames. Asserted to float32 rounding (atol 1e-6, rtol 1e-4) only, because other
    kernels (cuDNN, other oneDNN paths) may pick a length-dependent algorithm."""
    model = _calibrated_encoder()
    cut = CutToLongest(frames_needed_table(model, 2048), 2048)
    gen = torch.Generator().manual_seed(1)
    samples = [_sample(n, i, gen) for i, n in enumerate([40, 200, 333, 517])]
    full, short = default_collate(samples), cut(samples)
    # Longest clip: 517 frames = 8 steps, which read 64 * 8 + 131 = 643 frames; rounded up to 704.
    assert short["spec"].shape == (4, 40, 704) and short["full_frames"] == 2048
    assert torch.equal(short["spec"], full["spec"][:, :, :704])
    for key in ("image_feat", "n_frames", "label", "index"):
        assert torch.equal(short[key], full[key]), key
    with torch.no_grad():
        _, a_full = model(full["spec"], encoder_steps(full["n_frames"], 32))
        _, a_cut = model(short["spec"], encoder_steps(short["n_frames"], 11), full_steps=32)
    assert a_full.abs().max() > 1e-3  # not trivially zero
    torch.testing.assert_close(a_cut, a_full, atol=1e-6, rtol=1e-4)


def test_a_batch_of_long_clips_is_not_cut_past_the_target_length():
    model = CNNRNN(bidirectional=True, embedding_dim=64, nhidden=64, nsent=64)
    cut = CutToLongest(frames_needed_table(model, 2048), 2048)
    gen = torch.Generator().manual_seed(0)
    assert cut([_sample(2048, 0, gen), _sample(100, 1, gen)])["spec"].shape[-1] == 2048
    assert cut([_sample(20, 0, gen)])["spec"].shape[-1] == 256  # one step reads 195 frames


# --- the sampler --------------------------------------------------------------------------------------


def _all_ranks(n: int, batch: int, world: int, epoch: int = 0, seed: int = 3, lengths=None):
    lengths = np.random.default_rng(0).integers(200, 600, n) if lengths is None else lengths
    out = []
    for rank in range(world):
        s = LengthBucketSampler(n, batch, num_replicas=world, rank=rank, seed=seed)
        s.set_epoch(epoch)
        s.set_lengths(lengths)
        out.append(list(s))
        assert len(s) == len(out[-1])
    return out


@pytest.mark.parametrize("n,batch,world", [(100, 8, 1), (100, 8, 3), (64, 8, 2), (13, 4, 4), (9, 8, 2), (517, 64, 4)])
def test_every_index_once_per_epoch_and_the_same_step_count_on_every_rank(n, batch, world):
    ranks = _all_ranks(n, batch, world)
    assert len({len(r) for r in ranks}) == 1
    flat = [i for r in ranks for b in r for i in b]
    assert sorted(flat) == list(range(n))
    assert all(1 <= len(b) <= batch for r in ranks for b in r)


def test_deterministic_for_seed_and_epoch_and_new_each_epoch():
    assert _all_ranks(200, 8, 2, epoch=1) == _all_ranks(200, 8, 2, epoch=1)
    assert _all_ranks(200, 8, 2, epoch=1) != _all_ranks(200, 8, 2, epoch=2)
    assert _all_ranks(200, 8, 2, seed=1) != _all_ranks(200, 8, 2, seed=2)


def test_batches_group_similar_lengths():
    lengths = np.random.default_rng(1).integers(200, 600, 1024)
    s = LengthBucketSampler(1024, 64, seed=0)
    s.set_lengths(lengths)
    spread = np.mean([np.ptp(lengths[b]) for b in s])
    random = np.mean([np.ptp(lengths[b]) for b in np.random.default_rng(2).permutation(1024).reshape(16, 64)])
    assert spread < 0.25 * random, (spread, random)
    # The ranks of one step get neighbouring batches of a sorted window.
    r0, r1 = _all_ranks(1024, 32, 2, lengths=lengths)
    assert np.mean([np.ptp(lengths[a + b]) for a, b in zip(r0, r1)]) < 0.25 * random


def test_resume_part_way_yields_the_rest_of_the_epoch():
    lengths = np.arange(100) % 37
    s = LengthBucketSampler(100, 8, num_replicas=2, rank=1, seed=5)
    s.set_epoch(4)
    s.set_lengths(lengths)
    whole = list(s)
    s.skip_batches = 3
    assert list(s) == whole[3:] and len(s) == len(whole) - 3
    s.skip_batches = len(whole) + 1
    assert list(s) == [] and len(s) == 0


def test_sampler_errors_are_clear():
    with pytest.raises(ValueError, match="same number of batches"):
        LengthBucketSampler(3, 4, num_replicas=4)
    s = LengthBucketSampler(10, 4)
    with pytest.raises(RuntimeError, match="set_lengths"):
        list(s)
    with pytest.raises(ValueError, match="expected 10 lengths"):
        s.set_lengths([1, 2, 3])


# --- the lengths each epoch draws, known before loading ------------------------------------------------


@pytest.mark.parametrize("min_frames", [64, 250])
def test_planned_frames_are_the_frames_the_samples_draw(toy_dataset, min_frames):
    """Header counts + the dataset's own (seed, epoch, index) draws give each sample's caption length; with
    min_frames 250 some images have no caption that long and keep their longest, as __getitem__ does."""
    manifest = load_manifest(toy_dataset / "train.json", "birds")
    ds = SpeechImageDataset(manifest, load_teacher_features(manifest), FrontEndConfig(target_length=320), None,
                            seed=7, min_frames=min_frames)
    for epoch in (0, 3):
        ds.set_epoch(epoch)
        planned = ds.planned_frames(epoch)
        assert planned.tolist() == [ds[i]["n_frames"] for i in range(len(ds))]
    assert not np.array_equal(ds.planned_frames(0), ds.planned_frames(1))


# --- training runs -------------------------------------------------------------------------------------


def _same_run(a, b) -> None:
    ca, cb = (torch.load(p / "latest.pth", weights_only=True) for p in (a, b))
    for key in ("state_dict", "optimizer"):
        flat_a, flat_b = _flatten(ca[key]), _flatten(cb[key])
        assert flat_a.keys() == flat_b.keys()
        for k in flat_a:
            assert torch.equal(flat_a[k], flat_b[k]), f"{key}{k}"
    losses = [[r["loss"] for r in read_jsonl(p / "metrics.jsonl") if r["split"] == "train"] for p in (a, b)]
    assert losses[0] == losses[1]


def _flatten(obj, prefix=""):
    if isinstance(obj, dict):
        return {k: v for key, val in obj.items() for k, v in _flatten(val, f"{prefix}.{key}").items()}
    if isinstance(obj, (list, tuple)):
        return {k: v for i, val in enumerate(obj) for k, v in _flatten(val, f"{prefix}[{i}]").items()}
    return {prefix: obj} if isinstance(obj, torch.Tensor) else {}


def test_options_off_train_bit_identically_to_a_run_without_them(toy_dataset, tmp_path):
    plain, off = tmp_path / "plain", tmp_path / "off"
    train_audio_encoder.main(train_args(toy_dataset, plain, "--epoch", "2"))
    train_audio_encoder.main(train_args(toy_dataset, off, "--epoch", "2", "--no-bucket_by_length",
                                        "--precision", "fp32"))
    _same_run(plain, off)
    ckpt = torch.load(off / "latest.pth", weights_only=True)
    assert ckpt["precision"] == "fp32" and ckpt["config"]["bucket_by_length"] is False
    assert "grad_scaler" not in ckpt


def _stop_at_call(n: int) -> type[StopRequest]:
    """A StopRequest that sees a Ctrl-C at its ``n``-th question (the trainer asks after every batch and
    after every epoch but the last)."""

    class StopAt(StopRequest):
        calls = 0

        def requested(self) -> bool:
            type(self).calls += 1
            if type(self).calls == n:
                self.signum = signal.SIGINT
            return self.signum is not None

    return StopAt


def test_bucketed_run_resumes_exactly_part_way(toy_dataset, tmp_path, monkeypatch):
    """3 batches per epoch on the toy set; the stop lands after batch 1 of epoch 1, and the resumed run ends
    bit-identical to the unbroken one (same batches, same lengths, same cuts)."""
    args = ("--epoch", "3", "--eval_every", "1", "--bucket_by_length")
    whole, broken = tmp_path / "whole", tmp_path / "broken"
    summary = train_audio_encoder.main(train_args(toy_dataset, whole, *args))
    log = (whole / "log.txt").read_text()
    assert "length buckets: frame counts of 72 training clips" in log and "precision fp32" in log
    assert torch.load(whole / "latest.pth", weights_only=True)["config"]["bucket_by_length"] is True
    assert np.isfinite(summary["final_metrics"]["val_loss"]) and summary["final_metrics"]["num_classes"] == 4

    monkeypatch.setattr(training_loop, "StopRequest", _stop_at_call(5))  # epoch 0: 3 batches + its end
    with pytest.raises(TrainingInterrupted):
        train_audio_encoder.main(train_args(toy_dataset, broken, *args))
    ckpt = torch.load(broken / "latest.pth", weights_only=True)
    assert ckpt["mid_epoch"]["epoch"] == 1 and ckpt["mid_epoch"]["batches"] == 1
    monkeypatch.setattr(training_loop, "StopRequest", StopRequest)
    train_audio_encoder.main(train_args(toy_dataset, broken, *args, "--resume", str(broken / "latest.pth")))
    _same_run(whole, broken)


def test_fp16_on_a_cpu_is_a_clear_error_before_any_file(toy_dataset, tmp_path):
    with pytest.raises(PrecisionError, match="fp16 needs CUDA"):
        train_audio_encoder.main(train_args(toy_dataset, tmp_path / "r", "--precision", "fp16", "--device", "cpu"))
    assert not (tmp_path / "r").exists()


def _tiny_step(device: torch.device, precision: str) -> tuple[CNNRNN, torch.optim.Optimizer, dict]:
    torch.manual_seed(0)
    model = CNNRNN(bidirectional=True, embedding_dim=64, nhidden=64, nsent=64).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    gen = torch.Generator().manual_seed(0)
    cut = CutToLongest(frames_needed_table(model, 512), 512)
    batches = [cut([_sample(n, i, gen, target=512, dim=64) for i, n in enumerate((90, 200, 300, 410))])
               for _ in range(2)]
    setup = TrainSetup(model, batches, opt, LossWeights(True, 1.0, 0.1, True, 5.0, True, 1000.0, 2.0), device,
                       num_epochs=1, print_every=0, log=print, show_progress=False, precision=precision,
                       scaler=grad_scaler(precision, device))
    stats = train_one_epoch(setup, 0)
    return model, opt, stats


def _assert_float32(model: CNNRNN, opt: torch.optim.Optimizer, stats: dict) -> None:
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(b.dtype in (torch.float32, torch.int64) for b in model.buffers())
    assert all(t.dtype == torch.float32 for st in opt.state.values() for k, t in st.items() if k != "step")
    assert np.isfinite(stats["loss"])


@pytest.mark.skipif(not native_bf16(torch.device("cpu")),
                    reason=f"this CPU reports none of the native-bf16 flags {', '.join(NATIVE_BF16_FLAGS)}: bf16 "
                           "would be emulated (slower than fp32), and the trainer refuses it there")
def test_a_bf16_encoder_step_keeps_float32_weights_and_optimizer_state():
    _assert_float32(*_tiny_step(torch.device("cpu"), "bf16"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_on_cuda_keep_float32_weights(precision):
    device = torch.device("cuda")
    if precision == "bf16" and not native_bf16(device):
        pytest.skip("this GPU has no native bf16")
    _assert_float32(*_tiny_step(device, precision))

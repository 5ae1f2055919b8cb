"""CNNRNN against docs/original.md#s5: shapes, parameter counts, state_dict keys, and the fixed original bugs."""

import pytest
import torch

from Audio_to_Image.speech_encoder import CNNRNN, encoder_steps, infer_model_args, load_speech_encoder
from s2i.checkpoints import CheckpointError


def test_parameter_counts_match_the_original():
    assert sum(p.numel() for p in CNNRNN(bidirectional=True).parameters()) == 11_669_506
    assert sum(p.numel() for p in CNNRNN(bidirectional=False).parameters()) == 13_766_658


def test_state_dict_keys_are_the_originals():
    keys = set(CNNRNN(bidirectional=True).state_dict())
    convs = {1, 2, 4, 5, 6, 7, 9, 10}
    want = {f"Conv.0.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    for i in convs:
        want.add(f"Conv.{i}.0.weight")
        want |= {f"Conv.{i}.1.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    for sfx in ("", "_reverse"):
        want |= {f"RNN.{k}_l0{sfx}" for k in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    assert keys == want
    assert not any(k.startswith(("Conv.3", "Conv.8")) for k in keys)  # max-pools have no parameters


def test_shapes_for_the_paper_input():
    m = CNNRNN(bidirectional=True).eval()
    x = torch.randn(3, 40, 2048)
    with torch.no_grad():
        words, sent = m(x, torch.tensor([32, 10, 1]))
    assert words.shape == (3, 1024, 32) and sent.shape == (3, 1024)
    assert m.steps_for(2048) == 32
    # Past each clip's length the word features are exact zeros, and the sentence embedding is the
    # mean over all 32 steps, padding included (docs/original.md#s5).
    assert torch.all(words[2, :, 1:] == 0)
    assert torch.allclose(sent[2], words[2, :, 0] / 32, atol=1e-7)


def test_batch_of_one_keeps_its_batch_dimension():
    m = CNNRNN(bidirectional=True).eval()
    with torch.no_grad():
        words, sent = m(torch.randn(1, 40, 256), torch.tensor([4]))
    assert words.shape == (1, 1024, 4) and sent.shape == (1, 1024)


def test_several_lstm_layers_work_and_lengths_need_not_be_sorted():
    m = CNNRNN(bidirectional=True, rnn_layers=2, embedding_dim=256, nhidden=256, nsent=256).eval()
    x = torch.randn(3, 40, 512)
    lengths = torch.tensor([3, 8, 5])
    with torch.no_grad():
        _, sent = m(x, lengths)
        _, alone = m(x[1:2], lengths[1:2])
    assert sent.shape == (3, 256)
    assert torch.allclose(sent[1], alone[0], atol=1e-5)  # order and batching do not change a clip's embedding
    assert "RNN.weight_ih_l1_reverse" in m.state_dict()


def test_input_dropout_acts_in_training_with_one_layer_and_not_in_eval():
    torch.manual_seed(0)
    m = CNNRNN(bidirectional=True, embedding_dim=64, nhidden=64, nsent=64, input_dropout=0.5)
    x, lengths = torch.randn(4, 40, 256), torch.tensor([4, 4, 4, 4])
    m.train()
    a1, a2 = m(x, lengths)[1], m(x, lengths)[1]
    assert not torch.allclose(a1, a2)
    m.eval()
    with torch.no_grad():
        assert torch.equal(m(x, lengths)[1], m(x, lengths)[1])
    # The original's setting (drop_prob with one layer, no input dropout) is deterministic in training.
    ref = CNNRNN(bidirectional=True, embedding_dim=64, nhidden=64, nsent=64, drop_prob=0.5)
    ref.train()
    torch.manual_seed(1)
    b1 = ref(x, lengths)[1]
    torch.manual_seed(2)
    b2 = ref(x, lengths)[1]
    assert torch.allclose(b1, b2)


def test_embedding_size_is_a_parameter():
    m = CNNRNN(bidirectional=True, embedding_dim=1280, nhidden=1280, nsent=1280).eval()
    with torch.no_grad():
        _, sent = m(torch.randn(2, 40, 256), torch.tensor([4, 2]))
    assert sent.shape == (2, 1280)


def test_init_follows_the_original():
    torch.manual_seed(0)
    m = CNNRNN(bidirectional=True)
    w = m.Conv[5][0].weight.detach()
    assert abs(float(w.mean())) < 1e-3 and abs(float(w.std()) - 0.02) < 1e-3
    bn = m.Conv[5][1].requires_grad_(False)
    assert abs(float(bn.weight.mean()) - 1.0) < 0.01 and float(bn.bias.abs().max()) == 0.0


def test_encoder_steps_clamps_short_and_long_clips():
    assert encoder_steps(torch.tensor([10, 64, 130, 5000]), 32).tolist() == [1, 1, 2, 32]


def test_bad_input_shape_and_lengths_are_clear_errors():
    m = CNNRNN(bidirectional=True).eval()
    with pytest.raises(ValueError, match=r"expects \(B, 40, T\)"):
        m(torch.randn(2, 64, 256), torch.tensor([1, 1]))
    with pytest.raises(ValueError, match="lengths must lie in"):
        m(torch.randn(2, 40, 256), torch.tensor([0, 1]))


@pytest.mark.parametrize("prefix", ["", "module."])
def test_original_format_checkpoint_loads_strictly(tmp_path, prefix):
    """An ``epoch_N.pth`` as the authors' EvalHook wrote it (docs/original.md#s7-4), with or without DDP's prefix."""
    torch.manual_seed(0)
    src = CNNRNN(n_filters=40, embedding_dim=1024, drop_prob=0.5, nhidden=1024, nsent=1024,
                 bidirectional=True, rnn_layers=1)
    state = {prefix + k: v for k, v in src.state_dict().items()}
    path = tmp_path / "epoch_990.pth"
    torch.save({"meta": {"epoch": 990}, "state_dict": state}, path)
    model, ckpt = load_speech_encoder(path)
    assert ckpt["meta"]["epoch"] == 990
    assert infer_model_args(src.state_dict())["bidirectional"] is True
    x = torch.randn(2, 40, 2048)
    with torch.no_grad():
        assert torch.equal(model(x, torch.tensor([32, 7]))[1], src.eval()(x, torch.tensor([32, 7]))[1])


def test_wrong_architecture_checkpoint_is_a_clear_error(tmp_path):
    path = tmp_path / "uni.pth"
    torch.save({"meta": {"epoch": 1}, "state_dict": CNNRNN(bidirectional=False).state_dict()}, path)
    with pytest.raises(CheckpointError, match="does not fit CNNRNN"):
        load_speech_encoder(path, overrides={"bidirectional": True})
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_speech_encoder(tmp_path / "junk.pth")


def test_full_steps_averages_a_cut_input_over_the_nominal_steps():
    """A length-bucketed batch is cut short of 2048 frames; ``full_steps`` keeps the mean over 32 steps."""
    m = CNNRNN(bidirectional=True, embedding_dim=64, nhidden=64, nsent=64).eval()
    x, lengths = torch.randn(2, 40, 256), torch.tensor([4, 2])
    with torch.no_grad():
        words, sent = m(x, lengths)
        _, sent32 = m(x, lengths, full_steps=32)
    assert words.shape == (2, 64, 4)
    assert torch.allclose(sent, words.sum(dim=2) / 4, atol=1e-7)  # the default: the mean over x's own steps
    assert torch.allclose(sent32, words.sum(dim=2) / 32, atol=1e-7)
    with pytest.raises(ValueError, match="full_steps"):
        m(x, lengths, full_steps=3)

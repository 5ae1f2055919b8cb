"""--precision {fp32,bf16,fp16,auto} (s2i/precision.py) and the generator stage in bf16: refusals that name
their reason, float32 state after a bf16 step, and fp32 runs that stay bit for bit what they were."""

import functools
import json

import pytest
import torch
import torch.nn as nn

from s2i import precision
from s2i.precision import PrecisionError, autocast, fp32_region, grad_scaler, resolve_precision
from s2i.runs import read_jsonl
from StackGAN import main as gan_main
from StackGAN.trainer import GanState, LossSettings, build_models, train_step
from tests.conftest import assert_same_gan_snapshot, gan_args

CPU = torch.device("cpu")
NATIVE_BF16 = precision.native_bf16(CPU)
needs_native_bf16 = pytest.mark.skipif(
    not NATIVE_BF16, reason="this CPU reports none of the native-bf16 flags "
    f"{', '.join(precision.NATIVE_BF16_FLAGS)} in /proc/cpuinfo: --precision bf16 is refused here, as it should be")


@pytest.fixture
def fake_cpu(tmp_path, monkeypatch):
    """Makes the CPU report the given /proc/cpuinfo flags: ``fake_cpu("avx2 avx512f")``."""
    real = precision.cpu_bf16_flags

    def make(flags: str) -> None:
        info = tmp_path / f"cpuinfo_{len(list(tmp_path.glob('cpuinfo_*')))}"
        info.write_text(f"processor\t: 0\nmodel name\t: fake\nflags\t\t: fpu sse2 {flags}\n\n"
                        f"processor\t: 1\nflags\t\t: fpu sse2 {flags}\n")
        # cpu_bf16_flags is cached per path: a new path is read afresh, the real one's entry is untouched.
        monkeypatch.setattr(precision, "cpu_bf16_flags", functools.partial(real, str(info)))

    return make


# --------------------------------------------------------------------------------------------------
# resolve_precision and the helpers


def test_unknown_name_is_an_error_listing_the_choices():
    with pytest.raises(PrecisionError, match=r"--precision must be one of fp32, bf16, fp16, auto, got 'fp8'"):
        resolve_precision("fp8", CPU)


def test_fp16_is_refused_on_the_cpu():
    with pytest.raises(PrecisionError, match="--precision fp16 needs CUDA"):
        resolve_precision("fp16", CPU)


def test_bf16_on_a_cpu_without_the_flags_names_the_check(fake_cpu):
    fake_cpu("avx2 avx512f avx512bw")
    with pytest.raises(PrecisionError) as exc:
        resolve_precision("bf16", CPU)
    msg = str(exc.value)
    assert "avx512_bf16" in msg and "amx_bf16" in msg and "/proc/cpuinfo" in msg and "slower" in msg
    assert "use --precision fp32 (or auto)" in msg
    assert isinstance(exc.value, ValueError)  # s2i.cli prints it as one line


def test_auto_picks_fp32_without_the_flags_and_bf16_with_them(fake_cpu):
    fake_cpu("avx2 avx512f")
    assert resolve_precision("auto", CPU) == "fp32"
    fake_cpu("avx2 avx512f avx512_bf16")
    assert resolve_precision("auto", CPU) == "bf16" == resolve_precision("bf16", CPU)
    assert resolve_precision("fp32", CPU) == "fp32"


def test_flags_are_read_from_x86_and_arm_cpuinfo(tmp_path):
    x86, arm = tmp_path / "x86", tmp_path / "arm"
    x86.write_text("flags\t\t: fpu avx512f amx_bf16 amx_tile avx512_bf16\n")
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n")
    assert precision.cpu_bf16_flags(str(x86)) == ("avx512_bf16", "amx_bf16")
    assert precision.cpu_bf16_flags(str(arm)) == ("bf16",)
    assert precision.cpu_bf16_flags(str(tmp_path / "missing")) == ()


def test_autocast_is_a_null_context_for_fp32_and_needs_a_resolved_name():
    a, b = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("fp32", CPU):
        assert not torch.is_autocast_enabled("cpu") and (a @ b).dtype == torch.float32
    with autocast("bf16", CPU):
        assert (a @ b).dtype == torch.bfloat16
        with fp32_region():
            assert (a @ b).dtype == torch.float32
        assert (a @ b).dtype == torch.bfloat16
    with pytest.raises(ValueError, match="resolve 'auto'"):
        autocast("auto", CPU)


def test_upcast_widens_16_bit_floats_only():
    for dtype in (torch.bfloat16, torch.float16):
        assert precision.upcast(torch.ones(2, dtype=dtype)).dtype == torch.float32
    for t in (torch.ones(2), torch.ones(2, dtype=torch.float64), torch.arange(2)):
        assert precision.upcast(t) is t  # the losses' float64 reference tests see float64


def test_the_gradient_scaler_is_active_for_fp16_only():
    assert not grad_scaler("fp32", CPU).is_enabled() and not grad_scaler("bf16", CPU).is_enabled()
    assert grad_scaler("fp16", CPU).is_enabled()
    loss = torch.tensor(2.0)
    assert grad_scaler("bf16", CPU).scale(loss) is loss  # a pass-through: fp32 and bf16 steps are unscaled


# --------------------------------------------------------------------------------------------------
# The generator stage


def _tiny_state(prec: str, channels_last: bool = False) -> tuple[GanState, dict]:
    torch.manual_seed(0)
    g_args = {"branch_num": 2, "gf_dim": 8, "z_dim": 10, "embedding_dim": 16, "text_dim": 24, "r_num": 1}
    d_args = [{"resolution": 64 * 2**i, "df_dim": 8, "embedding_dim": 16, "num_classes": 3} for i in range(2)]
    G, netsD = build_models(g_args, d_args, CPU, channels_last=channels_last)
    state = GanState.create(G, netsD, 2e-4, 2e-4, precision=prec, channels_last=channels_last)
    batch = {"imgs": [torch.rand(4, 3, s, s) * 2 - 1 for s in (64, 128)],
             "wrong_imgs": [torch.rand(4, 3, s, s) * 2 - 1 for s in (64, 128)],
             "embedding": torch.randn(4, 24), "label": torch.tensor([0, 0, 1, 2]),
             "class_index": torch.tensor([0, 0, 1, 2]), "wrong_class_index": torch.tensor([1, 2, 0, 0])}
    return state, batch


ALL_LOSSES = LossSettings(uncond=1.0, kl=2.0, cal=1.0, colour=1.0, aux=1.0)


@needs_native_bf16
def test_a_bf16_step_keeps_weights_average_and_optimizer_state_float32():
    state, batch = _tiny_state("bf16")
    seen = set()
    hook = state.netsD[1].img_code_s16[0].register_forward_hook(lambda m, i, o: seen.add(o.dtype))
    before = [p.detach().clone() for p in state.G.parameters()]
    for _ in range(2):
        stats = train_step(state, batch, ALL_LOSSES, CPU, z_dim=10, ema_decay=0.9)
    hook.remove()
    assert seen == {torch.bfloat16}  # the discriminators' convolutions did run in bf16
    assert all(isinstance(v, float) and torch.isfinite(torch.tensor(v)) for v in stats.values())
    assert {"D_loss0", "D_loss1", "G_loss1", "cal_loss", "aux_loss", "kl_loss", "colour_loss"} <= set(stats)
    nets = [state.G, *state.netsD]
    assert all(t.dtype == torch.float32 for net in nets for t in [*net.parameters(), *net.buffers()]
               if t.is_floating_point())
    assert all(avg.dtype == torch.float32 for avg in state.ema)
    for opt in (state.optG, *state.optsD):
        moments = [v for s in opt.state.values() for k, v in s.items() if k in ("exp_avg", "exp_avg_sq")]
        assert moments and all(m.dtype == torch.float32 for m in moments)
    assert any(not torch.equal(a, b) for a, b in zip(before, state.G.parameters()))
    assert not state.scaler.is_enabled()


@needs_native_bf16
def test_a_bf16_step_is_close_to_the_fp32_step():
    """One step from the same weights and noise: the losses agree to bf16's rounding (measured: at most
    0.6 % relative on this fixture; 3 % allowed), and the KL term, computed from the conditioning
    augmentation, which stays float32 under autocast, is the same number."""
    out = {}
    for prec in ("fp32", "bf16"):
        state, batch = _tiny_state(prec)
        torch.manual_seed(1)
        out[prec] = train_step(state, batch, ALL_LOSSES, CPU, z_dim=10, ema_decay=0.9)
    for k, v in out["fp32"].items():
        assert out["bf16"][k] == pytest.approx(v, rel=0.03, abs=1e-3), k
    assert out["bf16"]["kl_loss"] == out["fp32"]["kl_loss"]


def _snapshot(run):
    return torch.load(run / "Model" / "latest.pth", weights_only=True)


def test_fp32_run_is_bit_identical_to_a_run_without_the_flag(tiny_gan_data, tmp_path):
    plain, flagged = tmp_path / "plain", tmp_path / "fp32"
    gan_main.main(gan_args(tiny_gan_data, plain, "--max_steps", "6"))
    summary = gan_main.main(gan_args(tiny_gan_data, flagged, "--max_steps", "6", "--precision", "fp32"))
    a, b = _snapshot(plain), _snapshot(flagged)
    assert_same_gan_snapshot(a, b)
    assert a["precision"] == b["precision"] == "fp32" and "scaler" not in a
    assert summary["precision"] == "fp32" and a["config"]["precision"] == "fp32"
    assert json.loads((plain / "summary.json").read_text())["precision"] == "fp32"
    assert "precision fp32 (--precision fp32)" in (plain / "log.txt").read_text()


@needs_native_bf16
def test_bf16_training_and_generation_record_it_and_store_float32(tiny_gan_data, tmp_path):
    out = tmp_path / "run"
    summary = gan_main.main(gan_args(tiny_gan_data, out, "--max_steps", "5", "--precision", "auto"))
    assert summary["precision"] == "bf16"
    snap = _snapshot(out)
    assert snap["precision"] == "bf16" and snap["config"]["precision"] == "auto"
    for sd in (snap["G"], snap["G_ema"], *snap["D"]):
        assert all(v.dtype == torch.float32 and torch.isfinite(v).all() for v in sd.values() if v.is_floating_point())
    assert "precision bf16 (--precision auto)" in (out / "log.txt").read_text()
    gen = gan_main.main(gan_args(tiny_gan_data, out, "--no-TRAIN.FLAG", "--eval_net_g", str(out / "Model" / "latest.pth"),
                                 "--precision", "bf16"))
    assert gen["precision"] == "bf16" and gen["images"] == 18 * 2 * 2
    # A bf16 run resumes in fp32 (the stored state is float32 whatever the precision).
    gan_main.main(gan_args(tiny_gan_data, out, "--max_steps", "6", "--resume", str(out / "Model" / "latest.pth")))
    assert _snapshot(out)["step"] == 6 and _snapshot(out)["precision"] == "fp32"


def test_refused_precision_stops_before_the_run_folder_is_made(tiny_gan_data, tmp_path, fake_cpu):
    out = tmp_path / "run"
    with pytest.raises(PrecisionError, match="fp16 needs CUDA"):
        gan_main.main(gan_args(tiny_gan_data, out, "--precision", "fp16", "--device", "cpu"))
    fake_cpu("avx2")
    with pytest.raises(PrecisionError, match="avx512_bf16"):
        gan_main.main(gan_args(tiny_gan_data, out, "--precision", "bf16", "--device", "cpu"))
    assert not out.exists()


def test_channels_last_trains_the_same_model_and_stores_weights_in_the_usual_order(tiny_gan_data, tmp_path):
    """Channels-last is the same model in another memory order, computed by other kernels: not bit for bit,
    so a GAN's runs drift apart over the steps, but the first steps' losses agree to float32 rounding
    (measured: equal to 4 digits over the first 4 steps, 1e-4 relative allowed over 2)."""
    plain, cl = tmp_path / "plain", tmp_path / "cl"
    gan_main.main(gan_args(tiny_gan_data, plain, "--max_steps", "2"))
    summary = gan_main.main(gan_args(tiny_gan_data, cl, "--max_steps", "2", "--channels_last"))
    assert summary["channels_last"] and not json.loads((plain / "summary.json").read_text())["channels_last"]
    for ra, rb in zip(read_jsonl(plain / "losses.jsonl"), read_jsonl(cl / "losses.jsonl"), strict=True):
        for k, v in ra.items():
            if k not in ("step", "epoch", "time"):
                assert rb[k] == pytest.approx(v, rel=1e-4), (ra["step"], k)
    snap = _snapshot(cl)
    for sd in (snap["G"], snap["G_ema"], *snap["D"]):
        assert all(v.is_contiguous() for v in sd.values())


def test_channels_last_models_compute_the_same_function():
    torch.manual_seed(0)
    state, batch = _tiny_state("fp32")
    cl_state, _ = _tiny_state("fp32", channels_last=True)
    conv = next(m for m in cl_state.netsD[0].modules() if isinstance(m, nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    x = batch["imgs"][0]
    torch.testing.assert_close(cl_state.netsD[0].eval()(x)[0][0], state.netsD[0].eval()(x)[0][0])

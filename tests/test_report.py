"""The results report: its HTML and assets on disk, and the page as headless Chromium loads it."""

import html
import re
import shutil
from pathlib import Path
from urllib.parse import unquote

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from s2i.evaluation.report import (
    BROWSERS,
    BrowserNotFound,
    ReportError,
    Sample,
    curve_axes,
    find_browser,
    format_value,
    main,
    render_in_browser,
    write_report,
)

HAS_BROWSER = any(shutil.which(b) for b in BROWSERS)
needs_browser = pytest.mark.skipif(not HAS_BROWSER, reason="chromium not installed: apt-get install chromium-headless-shell")

EVIL = "a <script>alert('x')</script> & \"square\""
CURVES = {
    "gan losses": [{"time": 1.0 + s, "step": s, "epoch": s // 4, "D_total": 3.0 - 0.1 * s, "G_total": 1.0 + 0.05 * s}
                   for s in range(1, 13)],
    "speech encoder": [r for e in range(4) for r in (
        {"epoch": e, "split": "train", "lr": 1e-3, "loss": 2.0 / (e + 1), "accu": 10.0 * e, "seconds": 5.0},
        {"epoch": e, "split": "test", "accu": 8.0 * e, "num_classes": 3})],
}
METRICS = {
    "retrieval": {"s2i_R1": 0.123456789, "s2i_mAP": 12.3456, "queries": 240},
    "image quality": {"FID 64px": 123.456, "inception score": {"mean": 3.21, "std": 0.0000123}},
    "per class": [{"class": "circle", "R@1": 0.5}, {"class": "square", "R@1": 0.25, "note": "few"}],
}


def _png(path: Path, size: int, seed: int) -> Path:
    rng = np.random.default_rng(seed)
    Image.fromarray((rng.random((size, size, 3)) * 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def dataset(tmp_path) -> list[Sample]:
    """Three samples: 32 px real images, 32 px and 64 px generated ones, 0.3 s wav and flac clips."""
    src = tmp_path / "dataset"
    src.mkdir()
    rng = np.random.default_rng(0)
    samples = []
    for i, caption in enumerate(["a red circle", EVIL, "un carré bleu ✓"]):
        audio = src / f"clip{i}.{'flac' if i == 2 else 'wav'}"
        sf.write(audio, (0.1 * rng.standard_normal(4800)).astype(np.float32), 16000)
        samples.append(Sample(caption, audio, _png(src / f"real{i}.png", 32, i),
                              [_png(src / f"gen{i}_{j}.png", 32 * (j + 1), 10 * i + j) for j in range(2)],
                              label=f"class {i}", voice="held-out voice en+klatt", note="predicted: circle ✓"))
    return samples


def _write(run_dir: Path, samples: list[Sample]) -> Path:
    return write_report(run_dir, title="Shapes <eval>", metrics=METRICS, curves=CURVES, samples=samples,
                        notes=["checkpoint: output/x/best.pth"])


def _links(page: str) -> list[str]:
    return re.findall(r'\bsrc="([^"]*)"', page)


def test_html_and_assets(tmp_path, dataset):
    path = _write(tmp_path / "run", dataset)
    assert path == tmp_path / "run" / "report.html"
    page = path.read_text(encoding="utf-8")

    assert html.escape(EVIL) in page and "<script>alert" not in page
    assert page.count("<script") == 1  # only the load check
    assert "un carré bleu ✓" in page and "Shapes &lt;eval&gt;" in page
    for shown in ("0.1235", "12.35", "123.5", "1.230e-05", "240", "retrieval", "inception score", "circle"):
        assert f">{shown}<" in page
    assert 'id="load-status"' in page

    links = _links(page)
    audio = re.findall(r'<audio controls preload="metadata" src="([^"]*)"', page)
    assert len(audio) == 3 and [Path(a).suffix for a in audio] == [".wav", ".wav", ".flac"]
    assert len(links) == 3 + 3 * 3 + 2  # clips, real + 2 generated per sample, 2 curve plots
    for link in links:
        assert link.startswith("report_files/")
        assert (path.parent / unquote(link)).is_file(), link
    assert str(tmp_path) not in page
    assert not re.search(r"https?://|file:|src=\"/", page)

    # the copies keep the report whole when the dataset goes away
    shutil.rmtree(tmp_path / "dataset")
    assert all((path.parent / unquote(link)).is_file() for link in links)
    with Image.open(path.parent / unquote(next(k for k in links if "/curves/" in k))) as curve:
        assert curve.format == "PNG" and curve.width > 300


def test_rewrite_replaces_assets(tmp_path, dataset):
    run = tmp_path / "run"
    _write(run, dataset)
    (run / "report_files" / "left_over.txt").write_text("from an older report")
    page = write_report(run, title="again", samples=dataset[:1]).read_text(encoding="utf-8")

    files = sorted(p.relative_to(run / "report_files").as_posix() for p in (run / "report_files").rglob("*")
                   if p.is_file())
    assert files == ["samples/001/audio.wav", "samples/001/generated_1.png", "samples/001/generated_2.png",
                     "samples/001/real.png"]
    assert sorted(p.name for p in run.iterdir()) == ["report.html", "report_files"]  # no temporary left
    assert "again" in page and "Metrics" not in page and "curves/" not in page


def test_bad_input_writes_nothing(tmp_path, dataset):
    dataset[1].generated.append(tmp_path / "missing.png")
    with pytest.raises(ReportError, match=r"sample 2 .*generated image 3 .*missing\.png does not exist"):
        _write(tmp_path / "run", dataset)
    (tmp_path / "not_an_image.png").write_bytes(b"not a png")
    dataset[1].generated[-1] = tmp_path / "not_an_image.png"
    with pytest.raises(ReportError, match="cannot read image .*not_an_image.png"):
        _write(tmp_path / "run", dataset)
    assert list((tmp_path / "run").iterdir()) == []
    with pytest.raises(ReportError, match=r"curve 'gan losses'.*\['nope'\]"):
        write_report(tmp_path / "run", title="t", curves=CURVES, curve_keys={"gan losses": ["nope"]})


def test_format_value():
    cases = {0.123456789: "0.1235", 12.3456: "12.35", 123.456: "123.5", 1234.56: "1235", 12345.6: "12346",
             1.2e-5: "1.200e-05", 2.5e7: "2.500e+07", 0.0: "0", 240: "240", float("nan"): "nan", "x": "x",
             None: "—", True: "yes", np.float32(0.5): "0.5", (0.5, 2): "0.5, 2"}
    assert {k: format_value(k) for k in cases} == cases


def test_curve_axes():
    assert curve_axes(CURVES["gan losses"]) == ("step", ["D_total", "G_total"])
    # lr and num_classes never change, seconds is the clock
    assert curve_axes(CURVES["speech encoder"]) == ("epoch", ["loss", "accu"])
    assert curve_axes([{"a": 1}, {"a": 2}], ["a"]) == ("", ["a"])


def test_browser_not_found(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(BrowserNotFound, match="apt-get install chromium-headless-shell"):
        find_browser()


@needs_browser
def test_page_loads_in_chromium(tmp_path, dataset):
    path = _write(tmp_path / "run", dataset)
    status = render_in_browser(path, screenshot=tmp_path / "shot.png", width=1000)
    assert status["loaded"] and status["broken"] == 0 and status["broken_src"] == []
    assert status["images"] == status["expected_images"] == 3 * 3 + 2
    assert status["audio"] == 3 and status["audio_broken"] == 0 and status["audio_unverified"] == 0

    with Image.open(tmp_path / "shot.png") as im:
        assert im.size == (1000, status["page_height"]) and im.height > 900  # the whole page, not one screen
        pixels = np.asarray(im.convert("RGB")).astype(np.uint32)
    colours = np.unique((pixels[..., 0] << 16) | (pixels[..., 1] << 8) | pixels[..., 2])
    assert pixels.std() > 20 and len(colours) > 1000  # text, plots and the noise images, not a blank page

    assert main(["check", str(path)]) == 0
    assert main(["screenshot", str(path), str(tmp_path / "cli.png"), "--width", "800", "--height", "600"]) == 0
    with Image.open(tmp_path / "cli.png") as im:
        assert im.size == (800, 600)


@needs_browser
def test_chromium_sees_broken_assets(tmp_path, dataset, capsys):
    path = _write(tmp_path / "run", dataset)
    (path.parent / "report_files/samples/002/generated_1.png").write_bytes(b"not a png")
    (path.parent / "report_files/samples/003/audio.flac").unlink()
    status = render_in_browser(path)
    assert status["loaded"] and status["images"] == 11
    assert status["broken"] == 1 and status["audio_broken"] == 1
    assert status["broken_src"] == ["report_files/samples/002/generated_1.png", "report_files/samples/003/audio.flac"]
    assert main(["check", str(path)]) == 1
    assert "1 broken" in capsys.readouterr().out

"""The results report: one ``report.html`` in a run folder that a person opens from disk, no server.

``write_report`` puts a metrics table, training curves (PNG, drawn with matplotlib's Agg canvas) and a grid
of samples (a playable clip, its caption, the real image and the generated ones) into
``run_dir/report.html``, and copies every file the page shows into ``run_dir/report_files/``, so the page
keeps working after the dataset moves. Links are relative, text is escaped, nothing is fetched from the
network. A few lines of inline script count, after load, the images that failed to load and the clips
that failed to decode, and write the result into ``<p id="load-status">``, for a person and for
``render_in_browser``, which runs headless Chromium on the page and returns those counts (and, if asked,
a screenshot).

Command line (for the README screenshot, or to check a report)::

    python -m s2i.evaluation.report screenshot output/eval/report.html docs/report.png --width 1200
    python -m s2i.evaluation.report check output/eval/report.html
"""

from __future__ import annotations

import html
import json
import math
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import quote

from s2i.files import atomic_write, write_bytes_atomic
from s2i.runs import pid_alive

REPORT_NAME = "report.html"
ASSETS_NAME = "report_files"
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
# Formats every current browser shows; anything else Pillow reads is converted to PNG on copy.
BROWSER_IMAGE_FORMATS = {"PNG": ".png", "JPEG": ".jpg", "GIF": ".gif", "WEBP": ".webp", "BMP": ".bmp"}
# Keys of a JSONL record that are never plotted by default: the x axes, the clock, the series name.
NOT_PLOTTED = {"step", "epoch", "time", "seconds", "split"}
SERIES_KEY = "split"  # records with split "train" and "test" become two lines in one panel
BROWSERS = ("chromium-headless-shell", "chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
BROWSER_PACKAGE = "chromium-headless-shell"
MAX_SCREENSHOT_HEIGHT = 16384


class ReportError(ValueError):
    """The report cannot be written from what was given (a missing or unreadable file, an unknown key)."""


class BrowserNotFound(FileNotFoundError):
    """No headless Chromium or Chrome on PATH."""


class RenderError(RuntimeError):
    """The browser ran but did not produce the page's DOM or the screenshot."""


@dataclass
class Sample:
    """One spoken caption and the images that belong to it.

    Args:
        caption: the text that was spoken.
        audio: the clip (wav or flac), copied next to the report.
        real_image: the dataset image the caption describes, or None.
        generated: images generated from the clip, shown in order.
        label: a short heading, e.g. the class name or the file key.
        voice: how the clip was made, e.g. "held-out voice en+klatt".
        note: one line shown under the images, e.g. "predicted: red circle ✓".
    """

    caption: str
    audio: Path
    real_image: Path | None = None
    generated: list[Path] = field(default_factory=list)
    label: str = ""
    voice: str = ""
    note: str = ""

    def __post_init__(self) -> None:
        self.audio = Path(self.audio)
        self.real_image = None if self.real_image is None else Path(self.real_image)
        self.generated = [Path(p) for p in self.generated]


# ----------------------------------------------------------------------------------------------------
# Writing


def write_report(run_dir: str | Path, *, title: str, metrics: Mapping[str, Any] | Sequence[Any] | None = None,
                 curves: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
                 samples: Sequence[Sample] = (), notes: Sequence[str] = (),
                 curve_keys: Mapping[str, Sequence[str]] | None = None, image_size: int = 128) -> Path:
    """Writes ``run_dir/report.html`` and its assets in ``run_dir/report_files/``; returns the HTML's path.

    Args:
        run_dir: the folder to write into (created if missing).
        title: the page's heading.
        metrics: ``{name: value}``, or sections ``{section: {name: value}}`` nested to any depth; a
            section may also be a list of rows (dicts, one column per key), e.g. per-class results.
            Values are numbers or strings; floats are shown with 4 significant digits (the full value
            is the cell's tooltip).
        curves: ``{name: records}``, records as in a run folder's ``metrics.jsonl``/``losses.jsonl``
            (``s2i.runs.read_jsonl``). One PNG per name, one panel per numeric key against ``step``
            (else ``epoch``, else the record's index), one line per ``split`` value.
        samples: the samples' grid, in order.
        notes: lines shown under the title (what was evaluated, with which checkpoint, ...).
        curve_keys: ``{name: keys}`` to plot only these keys of that curve; by default every numeric key
            that changes, except step/epoch/time/seconds.
        image_size: the displayed side of each image in CSS pixels; smaller images are scaled up
            without smoothing.

    Writes are atomic: the assets are built in a temporary folder that replaces ``report_files/`` as a
    whole (so no file of an older report is left behind), then the HTML is renamed into place
    (:func:`s2i.files.atomic_write`).
    """
    run_dir = Path(run_dir)
    _check_inputs(samples, curves, curve_keys)
    run_dir.mkdir(parents=True, exist_ok=True)
    _remove_stale_staging(run_dir)
    pid = os.getpid()
    staging = run_dir / f".{ASSETS_NAME}.{pid}.partial"
    retired = run_dir / f".{ASSETS_NAME}.{pid}.old"
    final_assets, final_html = run_dir / ASSETS_NAME, run_dir / REPORT_NAME
    for stale in (staging, retired):
        shutil.rmtree(stale, ignore_errors=True)
    staging.mkdir()
    try:
        assets = _Assets(staging)
        body = [
            _header_html(title, notes, samples),
            _metrics_section(metrics),
            _curves_section(curves or {}, curve_keys or {}, assets),
            _samples_section(samples, assets, image_size),
        ]
        per_card = max([len(s.generated) + (s.real_image is not None) for s in samples], default=1)
        page = _page(title, "\n".join(part for part in body if part), image_size, per_card, assets.images)
        # The folder swap happens inside the block: the HTML is renamed in only once its assets are in place,
        # and a failed swap leaves the old page.
        with atomic_write(final_html, "w", encoding="utf-8") as f:
            f.write(page)
            if final_assets.exists():
                os.rename(final_assets, retired)
            try:
                os.rename(staging, final_assets)
            except BaseException:
                if retired.exists() and not final_assets.exists():
                    os.rename(retired, final_assets)
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
        shutil.rmtree(retired, ignore_errors=True)
    return final_html


def _check_inputs(samples: Sequence[Sample], curves: Mapping[str, Any] | None,
                  curve_keys: Mapping[str, Sequence[str]] | None) -> None:
    """Fails before anything is written if a file is missing or a curve name is unknown."""
    for i, s in enumerate(samples):
        if not isinstance(s, Sample):
            raise ReportError(f"samples[{i}]: expected an s2i.evaluation.report.Sample, found {type(s).__name__}")
        where = f"sample {i + 1} ({s.caption[:40]!r})"
        if not s.audio.is_file():
            raise ReportError(f"{where}: audio file {s.audio} does not exist")
        if s.audio.suffix.lower() not in AUDIO_SUFFIXES:
            raise ReportError(f"{where}: audio file {s.audio} is not one of {', '.join(AUDIO_SUFFIXES)}")
        for kind, path in [("real image", s.real_image)] + [(f"generated image {j + 1}", p)
                                                             for j, p in enumerate(s.generated)]:
            if path is not None and not path.is_file():
                raise ReportError(f"{where}: {kind} {path} does not exist")
    unknown = sorted(set(curve_keys or {}) - set(curves or {}))
    if unknown:
        raise ReportError(f"curve_keys names curve(s) {unknown} that are not in curves ({sorted(curves or {})})")


def _remove_stale_staging(run_dir: Path) -> None:
    """Removes the temporary asset folders of a writer that was killed (its pid is gone)."""
    for path in run_dir.glob(f".{ASSETS_NAME}.*"):
        parts = path.name.split(".")
        if len(parts) == 4 and parts[2].isdigit() and parts[3] in ("partial", "old") and not pid_alive(int(parts[2])):
            shutil.rmtree(path, ignore_errors=True)


class _Assets:
    """Copies files into the staging folder and hands back the link the page uses for each."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.images = 0  # <img> elements on the page, for the load check's expected count

    def link(self, path: Path) -> str:
        rel = path.relative_to(self.root).as_posix()
        return quote(f"{ASSETS_NAME}/{rel}")

    def new_path(self, rel: str) -> Path:
        dest = self.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        return dest

    def copy_audio(self, src: Path, rel_stem: str) -> str:
        dest = self.new_path(rel_stem + src.suffix.lower())
        shutil.copyfile(src, dest)
        return self.link(dest)

    def copy_image(self, src: Path, rel_stem: str) -> tuple[str, tuple[int, int]]:
        """Copies an image byte for byte (or as PNG if browsers cannot show its format); returns link, size."""
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(src) as im:
                size, fmt = im.size, im.format
                if fmt in BROWSER_IMAGE_FORMATS:
                    dest = self.new_path(rel_stem + BROWSER_IMAGE_FORMATS[fmt])
                    shutil.copyfile(src, dest)
                else:
                    dest = self.new_path(rel_stem + ".png")
                    im.convert("RGBA" if "A" in im.getbands() else "RGB").save(dest, format="PNG")
        except (UnidentifiedImageError, OSError) as exc:
            raise ReportError(f"cannot read image {src}: {exc}") from exc
        return self.link(dest), size


# ----------------------------------------------------------------------------------------------------
# Page parts


def _esc(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _header_html(title: str, notes: Sequence[str], samples: Sequence[Sample]) -> str:
    parts = [f"<header><h1>{_esc(title)}</h1>"]
    if notes:
        parts.append("<ul class=\"notes\">" + "".join(f"<li>{_esc(n)}</li>" for n in notes) + "</ul>")
    parts.append("<p id=\"load-status\" class=\"status pending\">Checking that every image and clip loads "
                 "(this needs JavaScript)&hellip;</p></header>")
    return "\n".join(parts)


def format_value(value: Any) -> str:
    """A metric as text: floats to 4 significant digits (scientific outside 1e-3..1e6), ints as they are."""
    if hasattr(value, "item") and callable(value.item):  # numpy / torch scalars
        try:
            value = value.item()
        except (ValueError, RuntimeError):
            pass
    if value is None:
        return "—"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)
        if value == 0:
            return "0"
        mag = abs(value)
        if mag < 1e-3 or mag >= 1e6:
            return f"{value:.3e}"
        if mag >= 1:
            decimals = max(0, 3 - int(math.floor(math.log10(mag))))
            return f"{value:.{decimals}f}"
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(format_value(v) for v in value)
    return str(value)


def _is_scalar(value: Any) -> bool:
    if isinstance(value, Mapping):
        return False
    if isinstance(value, (list, tuple)):
        return all(_is_scalar(v) and not isinstance(v, (list, tuple)) for v in value)
    return True


def _cell(value: Any) -> str:
    cls = " class=\"num\"" if _numeric(value) or hasattr(value, "item") else ""
    tip = f" title=\"{_esc(repr(value))}\"" if isinstance(value, float) else ""
    return f"<td{cls}{tip}>{_esc(format_value(value))}</td>"


def _kv_table(items: list[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th scope=\"row\">{_esc(k)}</th>{_cell(v)}</tr>" for k, v in items)
    return f"<table class=\"kv\"><tbody>{rows}</tbody></table>"


def _rows_table(rows: Sequence[Any]) -> str:
    """A list of dicts (one column per key, in order of first appearance) or of plain sequences."""
    if all(isinstance(r, Mapping) for r in rows):
        columns: list[str] = []
        for r in rows:
            columns += [k for k in r if k not in columns]
        head = "<thead><tr>" + "".join(f"<th scope=\"col\">{_esc(c)}</th>" for c in columns) + "</tr></thead>"
        body = "".join("<tr>" + "".join(_cell(r[c]) if c in r else "<td></td>" for c in columns) + "</tr>"
                       for r in rows)
        return f"<table class=\"rows\">{head}<tbody>{body}</tbody></table>"
    body = "".join("<tr>" + "".join(_cell(v) for v in (r if isinstance(r, (list, tuple)) else [r])) + "</tr>"
                   for r in rows)
    return f"<table class=\"rows\"><tbody>{body}</tbody></table>"


def _metrics_block(obj: Any, level: int) -> str:
    """Tables for a metrics dict; each section (and each run of plain values) is one ``div.group``."""
    if not isinstance(obj, Mapping):
        return _rows_table(obj) if isinstance(obj, (list, tuple)) else _kv_table([("value", obj)])
    parts: list[str] = []
    scalars: list[tuple[str, Any]] = []
    for key, value in obj.items():
        if _is_scalar(value):
            scalars.append((str(key), value))
            continue
        if scalars:
            parts.append(_kv_table(scalars))
            scalars = []
        h = min(level, 6)
        parts.append(f"<h{h}>{_esc(key)}</h{h}>" + _metrics_block(value, level + 1))
    if scalars:
        parts.append(_kv_table(scalars))
    return "\n".join(f"<div class=\"group\">{p}</div>" for p in parts)


def _metrics_section(metrics: Any) -> str:
    if not metrics:
        return ""
    return f"<section id=\"metrics\"><h2>Metrics</h2>\n<div class=\"groups\">{_metrics_block(metrics, 3)}</div></section>"


def _numeric(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def curve_axes(records: Sequence[Mapping[str, Any]], keys: Sequence[str] | None = None) -> tuple[str, list[str]]:
    """The x key (``step``, else ``epoch``, else ``""`` for the record index) and the keys to plot.

    By default every numeric key that takes more than one value, except step/epoch/time/seconds.
    """
    x = next((k for k in ("step", "epoch") if any(_numeric(r.get(k)) for r in records)), "")
    if keys is not None:
        present = {k for r in records for k in r}
        missing = [k for k in keys if k not in present]
        if missing:
            raise ReportError(f"curve key(s) {missing} are in none of its records (keys: {sorted(present)})")
        return x, list(keys)
    chosen: list[str] = []
    for r in records:
        chosen += [k for k, v in r.items() if _numeric(v) and k not in NOT_PLOTTED and k != x and k not in chosen]
    return x, [k for k in chosen if len({r[k] for r in records if _numeric(r.get(k))}) > 1]


def plot_curves(records: Sequence[Mapping[str, Any]], path: Path, *, title: str,
                keys: Sequence[str] | None = None) -> bool:
    """Draws one panel per key into a PNG at ``path``; False (and no file) when there is nothing to plot."""
    from matplotlib.figure import Figure  # the Agg canvas, without pyplot's global state

    records = [r for r in records if isinstance(r, Mapping)]
    x_key, keys = curve_axes(records, keys)
    if not keys:
        return False
    series = list(dict.fromkeys(str(r.get(SERIES_KEY, "")) for r in records))
    ncols = min(4, len(keys))
    nrows = math.ceil(len(keys) / ncols)
    fig = Figure(figsize=(3.3 * ncols, 2.5 * nrows + 0.4), dpi=100, layout="constrained")
    fig.suptitle(title)
    for i, key in enumerate(keys):
        ax = fig.add_subplot(nrows, ncols, i + 1)
        for name in series:
            pts = [(r[x_key] if x_key else j, r[key]) for j, r in enumerate(records)
                   if str(r.get(SERIES_KEY, "")) == name and _numeric(r.get(key)) and (not x_key or _numeric(r.get(x_key)))]
            if not pts:
                continue
            xs = [p[0] for p in pts]
            ys = [p[1] if math.isfinite(p[1]) else math.nan for p in pts]
            ax.plot(xs, ys, marker="o" if len(pts) <= 30 else None, markersize=3, linewidth=1.2, label=name or None)
        ax.set_title(key, fontsize=10)
        ax.set_xlabel(x_key or "record", fontsize=8)
        ax.tick_params(labelsize=8)
        ax.grid(alpha=0.3)
        if len(series) > 1:
            ax.legend(fontsize=7)
    fig.savefig(path, format="png")
    return True


def _curves_section(curves: Mapping[str, Sequence[Mapping[str, Any]]], curve_keys: Mapping[str, Sequence[str]],
                    assets: _Assets) -> str:
    if not curves:
        return ""
    parts = ["<section id=\"curves\"><h2>Training curves</h2>"]
    for i, (name, records) in enumerate(curves.items()):
        slug = re.sub(r"[^A-Za-z0-9_-]+", "_", str(name)).strip("_")[:40] or "curve"
        dest = assets.new_path(f"curves/{i:02d}_{slug}.png")
        try:
            drawn = plot_curves(records, dest, title=str(name), keys=curve_keys.get(name))
        except ReportError as exc:
            raise ReportError(f"curve {name!r}: {exc}") from exc
        if drawn:
            assets.images += 1
            parts.append(f"<figure class=\"curve\"><img src=\"{assets.link(dest)}\" alt=\"training curves: "
                         f"{_esc(name)}\"></figure>")
        else:
            parts.append(f"<p class=\"empty\">{_esc(name)}: no numeric values to plot "
                         f"({len(records)} record(s)).</p>")
    parts.append("</section>")
    return "\n".join(parts)


def _image_figure(link: str, size: tuple[int, int], image_size: int, alt: str, caption: str, source: Path) -> str:
    small = max(size) < image_size
    cls = " class=\"pixelated\"" if small else ""
    return (f"<figure><img src=\"{link}\"{cls} alt=\"{_esc(alt)}\" title=\"{_esc(source.name)} "
            f"({size[0]}&times;{size[1]})\"><figcaption>{_esc(caption)}</figcaption></figure>")


def _samples_section(samples: Sequence[Sample], assets: _Assets, image_size: int) -> str:
    if not samples:
        return ""
    parts = [f"<section id=\"samples\"><h2>Samples ({len(samples)})</h2><div class=\"grid\">"]
    for i, s in enumerate(samples):
        n = i + 1
        stem = f"samples/{n:03d}"
        heading = f"#{n}" + (f" &middot; {_esc(s.label)}" if s.label else "")
        card = [f"<article class=\"sample\"><h3>{heading}</h3>",
                f"<p class=\"caption\">{_esc(s.caption)}</p>"]
        if s.voice:
            card.append(f"<p class=\"voice\">{_esc(s.voice)}</p>")
        card.append(f"<audio controls preload=\"metadata\" src=\"{assets.copy_audio(s.audio, stem + '/audio')}\">"
                    "</audio>")
        figures = []
        if s.real_image is not None:
            link, size = assets.copy_image(s.real_image, f"{stem}/real")
            figures.append(_image_figure(link, size, image_size, f"real image for sample {n}", "real", s.real_image))
        for j, gen in enumerate(s.generated, 1):
            link, size = assets.copy_image(gen, f"{stem}/generated_{j}")
            figures.append(_image_figure(link, size, image_size, f"generated image {j} for sample {n}",
                                         f"generated {j}" if len(s.generated) > 1 else "generated", gen))
        assets.images += len(figures)
        if figures:
            card.append("<div class=\"images\">" + "".join(figures) + "</div>")
        if s.note:
            card.append(f"<p class=\"note\">{_esc(s.note)}</p>")
        card.append("</article>")
        parts.append("".join(card))
    parts.append("</div></section>")
    return "\n".join(parts)


_CSS = """
:root { color-scheme: light; --fg: #1d1d1f; --muted: #666; --line: #ddd; --ok: #1a7f37; --bad: #c62828; }
* { box-sizing: border-box; }
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; color: var(--fg);
       margin: 0 auto; padding: 1.2rem 1.5rem 3rem; max-width: 1400px; background: #fff; }
h1 { font-size: 1.6rem; margin: 0 0 .4rem; }
h2 { font-size: 1.25rem; margin: 2rem 0 .6rem; border-bottom: 1px solid var(--line); padding-bottom: .2rem; }
h3, h4, h5, h6 { font-size: 1rem; margin: .6rem 0 .3rem; }
h4, h5, h6 { font-size: .92rem; color: var(--muted); }
.groups { display: flex; flex-wrap: wrap; gap: 0 2.5rem; align-items: flex-start; }
.group .group { margin-left: .8rem; }
ul.notes { margin: .3rem 0; padding-left: 1.2rem; color: var(--muted); }
.status { display: inline-block; padding: .25rem .6rem; border-radius: 4px; background: #f2f2f2; margin: .4rem 0; }
.status.ok { background: #e6f4ea; color: var(--ok); }
.status.bad { background: #fdecea; color: var(--bad); font-weight: 600; }
table { border-collapse: collapse; margin: .2rem 0 .8rem; font-variant-numeric: tabular-nums; }
th, td { padding: .2rem .7rem; border-bottom: 1px solid var(--line); text-align: left; vertical-align: top; }
thead th { border-bottom: 2px solid #bbb; }
table.kv th { font-weight: normal; color: var(--muted); }
td.num { text-align: right; }
figure { margin: 0; }
figure.curve { margin: .5rem 0 1rem; }
figure.curve img { max-width: 100%; height: auto; }
figcaption { font-size: .8rem; color: var(--muted); text-align: center; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(var(--card), 1fr)); gap: 1rem; }
.sample { border: 1px solid var(--line); border-radius: 6px; padding: .6rem .8rem; }
.sample h3 { margin: 0 0 .2rem; color: var(--muted); font-size: .85rem; }
.caption { margin: .2rem 0 .4rem; font-size: 1rem; }
.voice, .note { margin: .3rem 0; font-size: .85rem; color: var(--muted); }
audio { width: 100%; height: 2.2rem; }
.images { display: flex; flex-wrap: wrap; gap: .5rem; margin-top: .4rem; }
.images img { width: var(--img); height: var(--img); object-fit: contain; background: #f4f4f4; display: block; }
img.pixelated { image-rendering: pixelated; }
img.broken { outline: 3px solid var(--bad); }
.empty { color: var(--muted); }
"""

# Runs once the page (and so every <img>) has loaded; clips are given until their metadata decodes.
_SCRIPT = """
(function () {
  var status = document.getElementById('load-status');
  function settle(clip) {
    return new Promise(function (resolve) {
      if (clip.error || clip.readyState >= 1) { resolve(); return; }
      clip.addEventListener('loadedmetadata', resolve, {once: true});
      clip.addEventListener('error', resolve, {once: true});
      setTimeout(resolve, 10000);
    });
  }
  function check() {
    var images = Array.prototype.slice.call(document.images);
    var broken = images.filter(function (im) { return !im.complete || im.naturalWidth === 0; });
    broken.forEach(function (im) { im.classList.add('broken'); });
    var clips = Array.prototype.slice.call(document.querySelectorAll('audio'));
    Promise.all(clips.map(settle)).then(function () {
      var failed = clips.filter(function (a) { return a.error; });
      var unverified = clips.filter(function (a) { return !a.error && a.readyState < 1; });
      var d = status.dataset;
      d.images = images.length;
      d.broken = broken.length;
      d.brokenSrc = JSON.stringify(broken.map(function (im) { return im.getAttribute('src'); })
        .concat(failed.map(function (a) { return a.getAttribute('src'); })));
      d.audio = clips.length;
      d.audioBroken = failed.length;
      d.audioUnverified = unverified.length;
      var bad = broken.length + failed.length;
      var text = bad === 0
        ? 'All ' + images.length + ' images and ' + clips.length + ' audio clips loaded.'
        : broken.length + ' of ' + images.length + ' images and ' + failed.length + ' of ' + clips.length +
          ' audio clips did not load (outlined in red): ' + JSON.parse(d.brokenSrc).join(', ');
      if (bad === 0 && unverified.length) { text += ' (' + unverified.length + ' clips not checked yet)'; }
      status.textContent = text;
      status.className = 'status ' + (bad ? 'bad' : 'ok');
      d.height = Math.ceil(document.documentElement.scrollHeight);
      d.done = '1';
    });
  }
  if (document.readyState === 'complete') { check(); } else { window.addEventListener('load', check); }
})();
"""


def _page(title: str, body: str, image_size: int, per_card: int, n_images: int) -> str:
    # wide enough for a sample's images in one row (up to 4 of them), so real and generated sit side by side
    card = max(260, min(max(per_card, 1), 4) * (int(image_size) + 8) + 30)
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        f"<title>{_esc(title)}</title>\n<style>{_CSS}:root {{ --img: {int(image_size)}px; --card: {card}px; }}\n"
        f"</style>\n</head>\n<body data-expected-images=\"{n_images}\">\n{body}\n<script>{_SCRIPT}</script>\n"
        "</body>\n</html>\n"
    )


# ----------------------------------------------------------------------------------------------------
# Checking in a browser


def find_browser() -> str:
    """The first of chromium-headless-shell, chromium, chromium-browser, google-chrome on PATH."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    raise BrowserNotFound(f"no headless browser found on PATH (looked for {', '.join(BROWSERS)}); "
                          f"install one, e.g. apt-get install {BROWSER_PACKAGE}")


class _StatusParser(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.status: dict[str, str] | None = None
        self.expected: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "body":
            self.expected = a.get("data-expected-images")
        if a.get("id") == "load-status" and self.status is None:
            self.status = a


def parse_load_status(dom: str) -> dict[str, Any]:
    """The counts the page's script wrote into ``<p id="load-status">`` (``loaded`` False if it did not run)."""
    p = _StatusParser()
    p.feed(dom)
    a = p.status or {}

    def num(key: str) -> int | None:
        value = a.get(key, "")
        return int(value) if value.isdigit() else None

    try:
        broken_src = json.loads(a.get("data-broken-src") or "[]")
    except json.JSONDecodeError:
        broken_src = []
    return {
        "loaded": a.get("data-done") == "1",
        "images": num("data-images"),
        "expected_images": int(p.expected) if p.expected and p.expected.isdigit() else None,
        "broken": num("data-broken"),
        "audio": num("data-audio"),
        "audio_broken": num("data-audio-broken"),
        "audio_unverified": num("data-audio-unverified"),
        "broken_src": broken_src,
        "page_height": num("data-height"),
    }


def _run_browser(args: list[str], timeout: float) -> str:
    """Runs the browser in its own process group (the Debian wrapper is a shell script that does not exec,
    so killing only the child would leave Chromium running); returns stdout."""
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                            start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired as exc:
        _kill_group(proc.pid)
        proc.communicate()
        raise RenderError(f"{args[0]} did not finish within {timeout:g} s") from exc
    finally:
        _kill_group(proc.pid)  # helpers (crash handler, zygotes) that outlived the browser
    if proc.returncode != 0:
        tail = "\n".join(err.decode(errors="replace").strip().splitlines()[-5:])
        raise RenderError(f"{args[0]} exited with status {proc.returncode}:\n{tail}")
    return out.decode("utf-8", errors="replace")


def _kill_group(pgid: int) -> None:
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def render_in_browser(html_path: str | Path, *, screenshot: str | Path | None = None, width: int = 1200,
                      height: int | None = None, timeout: float = 60, browser: str | None = None) -> dict[str, Any]:
    """Loads a report in headless Chromium and returns what its load check found.

    Args:
        html_path: the page (a file on disk).
        screenshot: where to write a PNG of the page, ``width`` × ``height`` pixels; without ``height``
            the page's full height (measured in a first pass, at most 16384 px).
        width, height: the browser window in CSS pixels.
        timeout: seconds per browser run before it is killed.
        browser: the executable; by default the first of chromium-headless-shell, chromium,
            chromium-browser, google-chrome on PATH.

    Returns ``{"loaded", "images", "expected_images", "broken", "audio", "audio_broken",
    "audio_unverified", "broken_src", "page_height", "screenshot"}``; ``loaded`` is False when the
    page's script did not finish (then the counts are None).

    The browser gets a throw-away profile (``--user-data-dir`` in a temporary folder) and virtual time, so
    the page settles (every image loaded or failed, every clip's metadata decoded) without real waiting.
    """
    html_path = Path(html_path).resolve()
    if not html_path.is_file():
        raise FileNotFoundError(f"{html_path} does not exist")
    exe = browser or find_browser()
    with tempfile.TemporaryDirectory(prefix="s2i-browser-", ignore_cleanup_errors=True) as scratch:
        profile = Path(scratch) / "profile"

        def run(extra: list[str], window_height: int) -> str:
            args = [exe, "--headless", "--disable-gpu", "--no-sandbox", "--allow-file-access-from-files",
                    f"--user-data-dir={profile}", "--no-first-run", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-extensions", "--mute-audio",
                    "--hide-scrollbars", "--virtual-time-budget=30000",
                    f"--window-size={int(width)},{int(window_height)}", *extra, html_path.as_uri()]
            return _run_browser(args, timeout)

        status = parse_load_status(run(["--dump-dom"], height or 900))
        status["screenshot"] = None
        if screenshot is not None:
            shot = Path(screenshot).resolve()
            shot_height = height or min(MAX_SCREENSHOT_HEIGHT, status["page_height"] or 900)
            # The browser draws into the scratch folder; the PNG then reaches its target in one rename.
            drawn = Path(scratch) / "screenshot.png"
            run([f"--screenshot={drawn}"], shot_height)
            if not drawn.is_file() or drawn.stat().st_size == 0:
                raise RenderError(f"{exe} ran but wrote no screenshot to {drawn}")
            write_bytes_atomic(shot, drawn.read_bytes(), durable=False)
            status["screenshot"] = shot
    return status


def _summary(status: dict[str, Any]) -> str:
    if not status["loaded"]:
        return "the page's load check did not finish (no <p id=\"load-status\">, or its script failed)"
    line = (f"{status['images']} images ({status['broken']} broken), {status['audio']} audio clips "
            f"({status['audio_broken']} broken, {status['audio_unverified']} unverified)")
    if status["broken_src"]:
        line += ": " + ", ".join(status["broken_src"])
    return line


def main(argv: Sequence[str] | None = None) -> int:
    """``screenshot REPORT.html OUT.png [--width W] [--height H]`` or ``check REPORT.html``."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m s2i.evaluation.report", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    shot = sub.add_parser("screenshot", help="PNG of a report page as headless Chromium draws it")
    shot.add_argument("html", type=Path, help="the report.html to draw")
    shot.add_argument("png", type=Path, help="where to write the screenshot")
    shot.add_argument("--width", type=int, default=1200, help="window width in pixels")
    shot.add_argument("--height", type=int, default=None, help="window height in pixels (default: the whole page)")
    shot.add_argument("--timeout", type=float, default=60, help="seconds before the browser is killed")
    check = sub.add_parser("check", help="exit 1 unless every image and clip of the page loads")
    check.add_argument("html", type=Path, help="the report.html to check")
    check.add_argument("--timeout", type=float, default=60, help="seconds before the browser is killed")
    args = parser.parse_args(argv)

    if args.command == "screenshot":
        status = render_in_browser(args.html, screenshot=args.png, width=args.width, height=args.height,
                                   timeout=args.timeout)
        print(f"wrote {status['screenshot']}; {_summary(status)}")
        return 0
    status = render_in_browser(args.html, timeout=args.timeout)
    print(_summary(status))
    ok = status["loaded"] and status["broken"] == 0 and status["audio_broken"] == 0
    return 0 if ok else 1


if __name__ == "__main__":
    import sys

    from s2i.cli import run_cli

    sys.exit(run_cli(main, extra=(RenderError,)))

"""The layering rule of the code base: scripts → stage libraries → s2i/, never upwards, never a script."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _import_graph():
    spec = importlib.util.spec_from_file_location("import_graph", ROOT / "tools" / "import_graph.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("import_graph", module)
    spec.loader.exec_module(module)
    return module


def test_no_import_points_up_a_layer_or_at_a_script():
    graph = _import_graph()
    assert graph.violations(graph.graph()) == []


def test_the_checker_sees_a_violation(tmp_path):
    graph = _import_graph()
    edges = {"s2i.runs": {"StackGAN.model"}, "StackGAN.model": {"Audio_to_Image.audio"},
             "Audio_to_Image.audio": {"Audio_to_Image.train_audio_encoder"}, "evaluate": {"s2i.runs"}}
    found = [why for _, _, why in graph.violations(edges)]
    assert found == [
        "s2i.runs (s2i) imports StackGAN.model (StackGAN)",
        "StackGAN.model (StackGAN) imports Audio_to_Image.audio (Audio_to_Image)",
        "Audio_to_Image.audio imports the script Audio_to_Image.train_audio_encoder",
    ]


def test_imports_inside_functions_count(tmp_path):
    graph = _import_graph()
    src = tmp_path / "m.py"
    src.write_text("def f():\n    from StackGAN.model import G_NET\n    import s2i.runs\n")
    assert graph.imports_of(src, {"StackGAN.model": src, "s2i.runs": src}) == {"StackGAN.model", "s2i.runs"}

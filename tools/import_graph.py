"""The project's module import graph, and the layering rule it must keep.

Layers, from top to bottom: stage scripts (the files users run) → stage libraries (``Audio_to_Image/``,
``StackGAN/``) → shared infrastructure and metrics (``s2i/``). An import may only point down or stay
inside its own package; a script is never imported by a library.

    python tools/import_graph.py              # the edges, one per line, and any layering violation
    python tools/import_graph.py --dot g.dot  # Graphviz source as well (dot -Tsvg g.dot -o g.svg)

Exit status 1 when a violation exists, so the rule can be checked in a test or CI.
"""

from __future__ import annotations

import argparse
import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("s2i", "Audio_to_Image", "StackGAN")
# Files run as programs (python FILE or python -m); everything else in a package is a library module.
SCRIPTS = {
    "Audio_to_Image.text_to_speech", "Audio_to_Image.train_audio_encoder", "Audio_to_Image.extract_audio_feature",
    "StackGAN.main",
}
LAYER = {"script": 0, "Audio_to_Image": 1, "StackGAN": 1, "s2i": 2}


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def project_modules() -> dict[str, Path]:
    found = {}
    for path in ROOT.glob("*.py"):
        found[module_name(path)] = path
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            found[module_name(path)] = path
    return found


def layer_of(module: str) -> str:
    top = module.split(".")[0]
    if module in SCRIPTS or top not in PACKAGES:
        return "script"
    return top


def imports_of(path: Path, known: dict[str, Path]) -> set[str]:
    """The project modules that ``path`` imports (anywhere in the file, functions included)."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        for name in names:
            if name in known:
                targets.add(name)
    return targets


def graph() -> dict[str, set[str]]:
    known = project_modules()
    return {mod: imports_of(path, known) for mod, path in sorted(known.items())}


def violations(edges: dict[str, set[str]]) -> list[tuple[str, str, str]]:
    """Every import that points up a layer, across the two stage packages, or at a script, as
    ``(importer, imported, why)``."""
    bad = []
    for src, targets in edges.items():
        for dst in sorted(targets):
            a, b = layer_of(src), layer_of(dst)
            if b == "script":
                bad.append((src, dst, f"{src} imports the script {dst}"))
            elif LAYER[b] < LAYER[a] or (LAYER[a] == LAYER[b] == 1 and a != b):
                bad.append((src, dst, f"{src} ({a}) imports {dst} ({b})"))
    return bad


def dot(edges: dict[str, set[str]]) -> str:
    """Graphviz source: one box per layer (scripts, each stage package, s2i), violations in red."""
    bad = {(src, dst) for src, dst, _ in violations(edges)}
    linked = set(edges).intersection({m for m, targets in edges.items() if targets} | set().union(*edges.values()))
    groups: dict[str, list[str]] = {}
    for mod in sorted(linked):  # a package's empty __init__ is left out
        groups.setdefault(layer_of(mod), []).append(mod)
    lines = ["digraph imports {", "  rankdir=LR; newrank=true; node [shape=box, fontsize=10];"]
    for name, mods in groups.items():
        lines.append(f'  subgraph "cluster_{name}" {{ label="{name}"; style=rounded;')
        lines += [f'    "{m}";' for m in mods]
        lines.append("  }")
    for src, targets in edges.items():
        for dst in sorted(targets):
            colour = " [color=red, penwidth=2]" if (src, dst) in bad else ""
            lines.append(f'  "{src}" -> "{dst}"{colour};')
    lines.append("}")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dot", help="also write Graphviz source to this file")
    args = parser.parse_args(argv)
    edges = graph()
    for src, targets in edges.items():
        for dst in sorted(targets):
            print(f"{src} -> {dst}")
    if args.dot:
        Path(args.dot).write_text(dot(edges))
    bad = violations(edges)
    print(f"{sum(map(len, edges.values()))} imports between {len(edges)} modules; "
          f"{len(bad)} layering violation(s)")
    for _, _, why in bad:
        print("  " + why)
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

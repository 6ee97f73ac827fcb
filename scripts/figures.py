"""Turn the figures the tests measured (tests/artifacts/figures/, written by harness.figures)
into the markdown tables under docs/results/ that README links to.

    bash scripts/test.sh && .venv/bin/python scripts/figures.py
"""

import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.append(REPO)  # appended, so the pack's nodes/ never shadows ComfyUI's

from harness.figures import FIGURES, rows  # noqa: E402

OUT = os.path.join(REPO, "docs", "results")


def fmt(value):
    if isinstance(value, float):
        return f"{value:.2e}" if value and (abs(value) < 1e-2 or abs(value) >= 1e3) else f"{value:.3g}"
    return str(value)


def table(name, title, intro):
    found = rows(name)
    if not found:
        return None
    columns = [c for c in found[0] if c != "row"]
    lines = [f"# {title}", "", intro, "", "| " + " | ".join(["case", *columns]) + " |",
             "|" + "---|" * (len(columns) + 1)]
    lines += ["| " + " | ".join([r["row"], *(fmt(r.get(c, "")) for c in columns)]) + " |" for r in found]
    os.makedirs(OUT, exist_ok=True)
    path = os.path.join(OUT, f"{name}.md")
    with open(path, "w") as f:
        f.write("\n".join(lines) + "\n\nWritten by `scripts/figures.py` from the figures the tests recorded "
                f"in `{os.path.relpath(FIGURES, REPO)}/{name}/`.\n")
    return path


TABLES = {
    "round_trip": ("Round trips on the tiny checkpoint, by model-sampling kind",
                   "tests/test_comfy_roundtrip.py: invert then sample with the same conditioning, cfg 7, "
                   "15 steps at denoise 0.8, a 2-image batch; relative error of the latent."),
    "families": ("Round trips on every model family",
                 "tests/test_families.py: tiny models of each family's real architecture, loaded or built "
                 "through ComfyUI's own classes; relative errors of the latent, the relative change an "
                 "edit prompt makes, and model calls per step."),
}

if __name__ == "__main__":
    written = [table(name, *text) for name, text in TABLES.items()]
    print("\n".join(p for p in written if p) or f"no figures under {FIGURES}: run the tests first")

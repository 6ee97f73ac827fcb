"""Figures that tests measure, kept for README: each test writes its rows here as it runs,
and `python -m scripts.figures` turns them into the tables under docs/results/ that README
links to, so no figure in README is typed by hand."""

import json
import os

from .comfy import REPO

FIGURES = os.path.join(REPO, "tests", "artifacts", "figures")  # git-ignored, rewritten by each run


def record(table, row, **values):
    """Keep one row of `table`: {column: value}; a later run of the same row replaces it."""
    folder = os.path.join(FIGURES, table)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, f"{row}.json"), "w") as f:
        json.dump(dict(values, row=row), f, indent=1)


def rows(table):
    folder = os.path.join(FIGURES, table)
    if not os.path.isdir(folder):
        return []
    out = []
    for name in sorted(os.listdir(folder)):
        with open(os.path.join(folder, name)) as f:
            out.append(json.load(f))
    return out

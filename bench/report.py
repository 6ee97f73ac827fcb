"""Markdown tables and the files each part writes: <out>/<part>.md and <out>/<part>.png."""

import os
import platform
import time

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import torch  # noqa: E402


def table(headers, rows):
    """A markdown table; floats are printed with 3 significant digits."""
    def cell(value):
        if isinstance(value, float):
            return f"{value:.3g}" if value == value else "n/a"
        return str(value)
    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def machine():
    """One line naming what ran the figures."""
    device = "CPU only (no GPU lent to this run)" if not torch.cuda.is_available() else torch.cuda.get_device_name()
    return (f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
            f"{torch.__version__} ({torch.get_num_threads()} threads), {device}")


def write_part(out_dir, part, title, body, figure):
    """Print the part's markdown and write it with its figure. Returns the markdown path."""
    os.makedirs(out_dir, exist_ok=True)
    stamp = time.strftime("%Y-%m-%d %H:%M")
    text = (f"# {title}\n\nComputed by `bench/{part}.py` on {stamp}: {machine()}.\n\n"
            f"![{part}]({part}.png)\n\n{body}\n")
    print(text)
    figure.tight_layout()
    figure.savefig(os.path.join(out_dir, f"{part}.png"), dpi=110)
    plt.close(figure)
    path = os.path.join(out_dir, f"{part}.md")
    with open(path, "w") as f:
        f.write(text)
    return path


def figure(ncols=1, width=5.5, height=4.0):
    return plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)

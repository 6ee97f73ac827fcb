"""DIR/report.json and DIR/report.md, and what a rerun will do after an interrupted run."""

import json
import os

from .manifest import ROUND_TRIP, part_name, write_atomically

NAMES_SHOWN = 10  # images named per line of the rerun note; the report lists them all


def image_row(image):
    record = image.record
    edits = [dict(record["edits"][str(k)]) if image.done(k) else None for k in range(len(image.edits))]
    parts = [p for p in [record["round_trip"], *edits] if p]
    return {"name": image.name, "image": image.path, "source": image.source,
            "round_trip_error": record["round_trip"]["error"] if record["round_trip"] else None,
            "round_trip_server": record["round_trip"]["server"] if record["round_trip"] else None,
            "edits": [dict(e, file=os.path.join(image.name, e["file"])) if e else
                      {"prompt": p, "file": None, "failed": image.failed.get(k, "not run")}
                      for k, (e, p) in enumerate(zip(edits, image.edits))],
            "seconds": round(sum(p["seconds"] or 0 for p in parts), 3),
            "failed": {("round_trip" if k == ROUND_TRIP else f"edit_{k + 1}"): m for k, m in image.failed.items()}}


def write_report(batch, images, settings, manifest, wall, path):
    servers = {s.url: {"prompts_submitted": s.submitted, "prompts_run": s.ran, "alive": s.alive,
                       "state": ("up" if s.alive else f"gone: {s.reason}") if s.checked else "not needed",
                       } for s in batch.servers}
    rows = [image_row(image) for image in images]
    run_edits = [e for row in rows for e in row["edits"] if e.get("prompt_id") in batch.ran_ids]
    report = {"settings": settings, "manifest": os.path.abspath(manifest), "client_id": batch.client_id,
              "wall_seconds": round(wall, 3),
              "prompts_submitted": sum(s.submitted for s in batch.servers),
              "prompts_run": sum(s.ran for s in batch.servers), "resubmitted_images": batch.resubmitted,
              "edits_run": len(run_edits), "edits_with_inversion_reused": sum(e["inversion_cached"] for e in run_edits),
              "servers": servers, "events": batch.events, "images": rows}
    write_atomically(path + ".json", json.dumps(report, indent=1).encode())
    with open(path + ".md", "w") as f:
        f.write("\n".join(markdown(report, batch, images, settings, manifest, wall)) + "\n")
    return report


def markdown(report, batch, images, settings, manifest, wall):
    fmt = lambda x: "-" if x is None else f"{x:.2e}"  # noqa: E731
    lines = [f"# Batch edit: {len(images)} images, {sum(len(i.edits) for i in images)} edits\n",
             f"{batch.template.spec.title}, {settings['steps']} steps at denoise {settings['denoise']} "
             f"({settings['scheduler']}), cfg {settings['cfg']}, checkpoint `{settings['ckpt']}`; "
             f"manifest `{manifest}`.\n",
             f"This run: {report['prompts_submitted']} prompts submitted, {report['prompts_run']} run, "
             f"{batch.resubmitted} images submitted again after a server was lost, {wall:.1f} s. "
             f"Inversion reused from ComfyUI's cache in {report['edits_with_inversion_reused']} of the "
             f"{report['edits_run']} edits run.\n",
             "| server | prompts run (this run) | state |", "|---|---|---|"]
    lines += [f"| {url} | {s['prompts_run']} | {s['state']} |" for url, s in report["servers"].items()]
    lines += ["", "Round-trip error: invert, then sample with the same (source) prompt; relative error of the "
              "latent against VAE Encode's.", "",
              "| image | round-trip error | edits (file, server, s) | time (s) |", "|---|---|---|---|"]
    for row in report["images"]:
        edits = "<br>".join(f"`{e['file']}` ({e['server']}, {e['seconds']:.1f} s"
                            f"{', inversion reused' if e['inversion_cached'] else ''})" if e.get("file") else
                            f"**missing** ({e['failed']})" for e in row["edits"])
        lines.append(f"| {row['name']} | {fmt(row['round_trip_error'])} | {edits} | {row['seconds']:.1f} |")
    return lines


def named(names):
    shown = ", ".join(names[:NAMES_SHOWN])
    return shown + (f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else "")


def rerun_note(images):
    """What the same command will do when run again: the finished images and parts it keeps,
    the parts it makes (failed ones too: a rerun tries them again)."""
    finished, partial, untouched = [], [], []
    for image in images:
        todo = [p for p in image.parts() if not image.done(p)]
        if not todo:
            finished.append(image.name)
        elif len(todo) == len(image.parts()):
            untouched.append(image.name)
        else:
            partial.append(f"{image.name} ({', '.join(part_name(p) for p in todo)})")
    outputs = sum(len(image.parts()) for image in images)
    left = sum(not image.done(p) for image in images for p in image.parts())
    if left == outputs:
        return [f"nothing was finished: a rerun of the same command makes all {outputs} outputs"]
    lines = [f"a rerun of the same command keeps the {outputs - left} outputs made so far and makes the other {left}:"]
    lines.append(f"  finished, kept: {named(finished)}" if finished else "  finished, kept: none")
    if partial:
        lines.append(f"  partly done, the rest redone: {named(partial)}")
    if untouched:
        lines.append(f"  not started, done in full: {named(untouched)}")
    return lines

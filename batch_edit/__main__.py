"""python -m batch_edit MANIFEST --server URL ... --out DIR: see batch_edit/__init__.py."""

import argparse
import os
import sys
import time

PACK = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# `python -m batch_edit` from the pack's folder finds everything; run any other way (the
# folder as a script, or -m from elsewhere with PYTHONPATH set) the pack root may be missing,
# and edict_core with it. Appended: nothing here may shadow what is already importable.
if PACK not in sys.path:
    sys.path.append(PACK)

from batch_edit import __doc__ as DOC  # noqa: E402
from batch_edit.client import Server  # noqa: E402
from batch_edit.manifest import Image, image_names, read_manifest  # noqa: E402
from batch_edit.prompts import Template  # noqa: E402
from batch_edit.report import rerun_note, write_report  # noqa: E402
from batch_edit.scheduler import Batch  # noqa: E402
from edict_core.spec import SPECS  # noqa: E402

DEFAULT_SERVER = "http://127.0.0.1:8188"
DEFAULT_CKPT = "v1-5-pruned-emaonly.safetensors"  # what the example workflows load
DEFAULT_NEGATIVE = "blurry, low quality"  # the example workflows' negative prompt
DEFAULT_METHOD = "edict"


def method_settings():
    """{setting name: [(spec, Setting)]}: the options that only some methods have."""
    found = {}
    for spec in SPECS.values():
        for setting in spec.settings:
            found.setdefault(setting.name, []).append((spec, setting))
    return found


def add_method_options(parser):
    for name, owners in method_settings().items():
        shown = lambda value: ("on" if value else "off") if isinstance(value, bool) else value  # noqa: E731
        defaults = (shown(owners[0][1].default) if len(owners) == 1 else
                    ", ".join(f"{spec.title} {shown(setting.default)}" for spec, setting in owners))
        titles = " and ".join(spec.title for spec, _ in owners)
        help_text = f"{titles} only (default {defaults}). {owners[0][1].tooltip}"
        flag = "--" + name.replace("_", "-")
        if owners[0][1].kind == "BOOLEAN":
            parser.add_argument(flag, dest=name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif owners[0][1].kind == "COMBO":
            parser.add_argument(flag, dest=name, choices=owners[0][1].options, default=None, help=help_text)
        else:
            parser.add_argument(flag, dest=name, type=float, default=None, help=help_text)


def parse_args(argv=None):
    by_method = ", ".join(f"{s.title} {s.scheduler}" for s in SPECS.values())
    parser = argparse.ArgumentParser(
        prog="python -m batch_edit", formatter_class=argparse.RawDescriptionHelpFormatter,
        description=DOC.split("\n\n")[0], epilog=DOC.split("\n\n", 2)[2])
    parser.add_argument("manifest", help="JSON or CSV manifest (see below)")
    parser.add_argument("--server", action="append", metavar="URL",
                        help=f"a ComfyUI server; repeat for several (default {DEFAULT_SERVER})")
    parser.add_argument("--out", required=True, metavar="DIR", help="where the edits and the report go")
    parser.add_argument("--method", choices=list(SPECS), default=DEFAULT_METHOD, help=f"default {DEFAULT_METHOD}")
    parser.add_argument("--steps", type=int, help="steps of Invert and Sample (default: the method's, "
                        + ", ".join(f"{s.title} {s.steps}" for s in SPECS.values()) + ")")
    parser.add_argument("--cfg", type=float, default=3.0, help="default 3")
    parser.add_argument("--denoise", type=float, default=None,
                        help=f"default the method's ({', '.join(f'{s.title} {s.denoise}' for s in SPECS.values())})")
    parser.add_argument("--scheduler", default=None, help=f"default the method's ({by_method})")
    parser.add_argument("--ckpt", default=DEFAULT_CKPT, help=f"checkpoint name on the servers (default {DEFAULT_CKPT})")
    parser.add_argument("--negative", default=DEFAULT_NEGATIVE, help=f"negative prompt (default {DEFAULT_NEGATIVE!r})")
    add_method_options(parser)
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds one HTTP request may take (default 30)")
    parser.add_argument("--retries", type=int, default=3,
                        help="failed requests in a row after which a server counts as gone (default 3)")
    parser.add_argument("--poll", type=float, default=0.5, help="seconds between polls of the queues (default 0.5)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    args = parser.parse_args(argv)
    args.server = [url.rstrip("/") for url in (args.server or [DEFAULT_SERVER])]
    if len(set(args.server)) != len(args.server):
        parser.error("a server is listed twice")
    if args.retries < 1:
        parser.error("--retries must be 1 or more")
    args.settings = settings_of(args, parser)
    return args


def settings_of(args, parser):
    """What, beside the image and its prompts, decides the outputs: a record made with other
    settings is stale. Options of another method are refused rather than silently ignored."""
    spec = SPECS[args.method]
    given = {name: getattr(args, name) for name in method_settings() if getattr(args, name) is not None}
    for name in sorted(set(given) - set(spec.defaults)):
        owners = " and ".join(s.title for s, _ in method_settings()[name])
        parser.error(f"--{name.replace('_', '-')} is a setting of {owners}, not of {spec.title} "
                     f"(--method {args.method}): leave it out, or pick --method accordingly")
    extra = dict(spec.defaults, **given)
    for name, value in extra.items():
        try:
            extra[name] = spec.checks[name](value)
        except ValueError as error:
            parser.error(f"--{name.replace('_', '-')}: {error}")
    steps = spec.steps if args.steps is None else args.steps
    if steps < spec.min_steps:
        parser.error(f"--steps: {spec.title} needs at least {spec.min_steps} steps")
    denoise = spec.denoise if args.denoise is None else args.denoise
    if not 0 < denoise <= 1:
        parser.error("--denoise must be above 0 and at most 1")
    return {"method": spec.name, "steps": steps, "cfg": args.cfg, "denoise": denoise,
            "scheduler": args.scheduler or spec.scheduler, "ckpt": args.ckpt, "negative": args.negative, **extra}


def check_servers(batch, servers):
    for server in servers:
        problem = server.check(batch.template.spec, batch.settings)
        if problem:
            server.alive, server.reason = False, problem
            batch.say(f"not using {server.url}: {problem}")


def stop(batch, images):
    """Ctrl-C: take this run's prompts off the servers and say what a rerun will do."""
    try:
        batch.say(cancelled(batch, *batch.cancel()))
    except KeyboardInterrupt:
        batch.say("stopped before every prompt was cancelled: some may still be queued on the servers")
    for line in rerun_note(images):
        batch.say(line)


def cancelled(batch, deleted, interrupted, unreachable):
    names = batch.part_names()
    message = f"interrupted: {len(deleted)} waiting prompts of this run deleted from the queues"
    if interrupted:
        running = "; ".join(names.get(prompt_id, prompt_id) for prompt_id in interrupted)
        message += f", the running {'one' if len(interrupted) == 1 else 'ones'} ({running}) interrupted"
    else:
        message += ", none of its prompts was running"
    if unreachable:
        message += f"; could not reach {', '.join(unreachable)}, whose queues may still hold prompts of this run"
    return message


def finish(batch, images, report, code, args):
    """The last line: done, or what is missing and why; the exit code."""
    missing = [(row["name"], e["prompt"]) for row in report["images"] for e in row["edits"] if not e.get("file")]
    missing += [(row["name"], "round trip") for row in report["images"] if row["round_trip_error"] is None]
    where = f"report: {args.out}/report.md"
    if code == 130:
        print(f"[batch_edit] interrupted; {len(missing)} outputs not made yet; {where}", file=sys.stderr)
    elif code == 2:
        print(f"[batch_edit] FAILED: no ComfyUI server left ({'; '.join(s.reason or '' for s in batch.servers)}); "
              f"{len(missing)} outputs not made; {where}", file=sys.stderr)
    elif missing:
        code = code or 1
        print(f"[batch_edit] {len(missing)} outputs not made: {missing[:5]}; {where}", file=sys.stderr)
    else:
        print(f"[batch_edit] done: {len(images)} images, {sum(len(i.edits) for i in images)} edits in {args.out}; "
              f"{where}", file=sys.stderr)
    return code


def prepare(args):
    """The batch, before any server is asked anything: a bad manifest is refused here."""
    template = Template(SPECS[args.method])
    entries = read_manifest(args.manifest)
    os.makedirs(args.out, exist_ok=True)
    images = [Image(e, name, args.out, args.settings) for e, name in zip(entries, image_names(entries))]
    servers = [Server(url, args.timeout, args.retries) for url in args.server]
    return Batch(args, template, images, servers, args.settings), images, servers


def main(argv=None):
    args = parse_args(argv)
    started = time.time()
    try:
        batch, images, servers = prepare(args)  # a rerun of a big batch hashes every photo: it may take a while
    except KeyboardInterrupt:
        print("[batch_edit] interrupted before anything was submitted", file=sys.stderr)
        return 130
    code = 0
    try:
        if any(image.pending() for image in images):
            check_servers(batch, servers)
            if not batch.alive():
                raise SystemExit(2)
        batch.run()
    except SystemExit as exit_:
        code = exit_.code if isinstance(exit_.code, int) else 1
    except KeyboardInterrupt:
        code = 130
        stop(batch, images)
    finally:
        report = write_report(batch, images, args.settings, args.manifest, time.time() - started,
                              os.path.join(args.out, "report"))
    return finish(batch, images, report, code, args)


if __name__ == "__main__":
    sys.exit(main())

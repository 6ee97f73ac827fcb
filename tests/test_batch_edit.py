"""The batch-edit command (python -m batch_edit, the pack's batch_edit/ package) against real
ComfyUI servers (main.py --cpu, the tiny checkpoint).

Two servers of this module: 6 drawn images, 2 edits each, 3 steps. One server is killed once
the batch has collected an image from it; the batch finishes on the other, loses nothing,
reuses each image's inversion through ComfyUI's cache, and a rerun submits nothing. On the
server that survived (no further server is started): a BDIA batch from CSV, and an O-BELM
batch stopped with Ctrl-C (nothing of it left queued, exit 130, the rerun note) and finished
by a rerun. Manifest refusals, prompt building and the rerun note need no server.

The two servers run torch on one thread each (OMP_NUM_THREADS=1): two servers on a small shared
machine, each with a thread pool as wide as the machine, spend most of their time waiting on
each other (a tiny-UNet call measured 5.6 s with two threads, 0.5 s with one, at load 12 on
2 cores)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from harness.comfy import CKPT_NAME, REPO, drawn_images
from harness.workflows import api_prompt, nodes_of_type

IMAGES, EDITS, STEPS = 6, 2, 3
# Measured: 0.0 for all 6 (the inverted pair is float64; sampling it back rounds to VAE Encode's
# float32 values exactly). One float32 step of the latent (about 6e-8 relative) is allowed.
ROUND_TRIP_BOUND = 1e-7
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS")


@pytest.fixture(scope="module")
def two_servers(tmp_path_factory):
    """Two ComfyUI servers over base directories of their own, started side by side; both
    stopped at the end, whatever happened."""
    from harness.server import ComfyServer, prepare_base

    bases = [str(tmp_path_factory.mktemp(f"batch_server_{n}")) for n in "ab"]
    prepare_base(bases[0])
    checkpoints = [os.path.join(base, "models", "checkpoints") for base in bases]
    os.makedirs(checkpoints[1])
    os.link(os.path.join(checkpoints[0], CKPT_NAME), os.path.join(checkpoints[1], CKPT_NAME))  # built once
    servers = [ComfyServer(prepare_base(base)) for base in bases]
    saved = {k: os.environ.get(k) for k in THREAD_VARIABLES}
    try:
        os.environ.update({k: "1" for k in THREAD_VARIABLES})  # what the servers inherit
        try:
            with ThreadPoolExecutor(2) as pool:
                list(pool.map(lambda s: s.start(), servers))
        finally:
            for k, v in saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
        yield servers
    finally:
        for server in servers:
            server.stop()


@pytest.fixture(scope="module")
def manifest(tmp_path_factory):
    """6 drawn pictures as PNGs in photos/ and a JSON manifest beside it, 2 edits each."""
    folder = tmp_path_factory.mktemp("batch")
    (folder / "photos").mkdir()
    entries = []
    for i, picture in enumerate(drawn_images(batch=IMAGES, size=64)):
        Image.fromarray((picture.numpy() * 255).round().astype("uint8")).save(folder / "photos" / f"picture{i}.png")
        entries.append({"image": f"photos/picture{i}.png", "source": f"a photo of a dog on the beach, number {i}",
                        "edits": [f"a photo of a cat on the beach, number {i}", f"a painting of a fox, number {i}"]})
    (folder / "manifest.json").write_text(json.dumps(entries, indent=1))
    return folder / "manifest.json"


def batch_command(manifest, servers, out):
    command = [sys.executable, "-m", "batch_edit", str(manifest), "--out", str(out),
               "--steps", str(STEPS), "--ckpt", CKPT_NAME, "--poll", "0.2", "--retries", "2", "--no-progress"]
    for server in servers:
        command += ["--server", server.url]
    return command


def images_collected_from(server, out):
    """The images whose round trip and edits the batch has collected from `server` (their records)."""
    done = []
    for path in out.glob("*/record.json"):
        try:
            record = json.loads(path.read_text())
        except ValueError:
            continue
        parts = [record["round_trip"], *record["edits"].values()]
        if record["round_trip"] and len(parts) == 1 + EDITS and all(p["server"] == server.url for p in parts):
            done.append(path.parent.name)
    return done


def kill_when_one_image_is_done(server, process, out, timeout=240):
    """Terminate `server` once the batch has collected one whole image from it, while it still
    has prompts queued (its other images are unfinished). Returns how many prompts it had run."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        if process.poll() is not None:
            pytest.fail(f"the batch ended before the server could be killed:\n{process.stdout.read()}")
        if images_collected_from(server, out):
            queue = server.get("/queue")
            if not queue["queue_pending"]:
                pytest.fail("server A finished all its work before it could be killed")
            ran = len(server.get("/history"))
            server.process.terminate()
            server.process.wait(20)
            return ran
        time.sleep(0.05)
    pytest.fail(f"server A finished no image in {timeout} s:\n{server.log()}")


def test_batch_edit_survives_a_server_and_resumes(two_servers, manifest, tmp_path):
    a, b = two_servers
    out = tmp_path / "out"
    started = time.time()
    process = subprocess.Popen(batch_command(manifest, two_servers, out), cwd=REPO, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, text=True)
    try:
        a_done_when_killed = kill_when_one_image_is_done(a, process, out)
        log, _ = process.communicate(timeout=300)
    finally:
        if process.poll() is None:
            process.kill()
    wall = time.time() - started
    assert process.returncode == 0, log
    assert f"server {a.url} is gone" in log

    # no image lost: every edit made, every image in the report with its round trip
    for i in range(IMAGES):
        for k in range(1, EDITS + 1):
            with Image.open(out / f"picture{i}" / f"edit_{k}.png") as picture:
                assert picture.size == (64, 64)
    report = json.loads((out / "report.json").read_text())
    assert (out / "report.md").is_file()
    rows = {row["name"]: row for row in report["images"]}
    assert sorted(rows) == [f"picture{i}" for i in range(IMAGES)]
    errors = [rows[name]["round_trip_error"] for name in sorted(rows)]
    assert all(e is not None and e <= ROUND_TRIP_BOUND for e in errors), errors

    # which server did what: A until it was killed, B the rest, including A's unfinished images
    servers = report["servers"]
    assert not servers[a.url]["alive"] and servers[b.url]["alive"]
    assert servers[a.url]["prompts_run"] >= 1 + EDITS
    assert servers[a.url]["prompts_run"] + servers[b.url]["prompts_run"] == IMAGES * (1 + EDITS)
    assert report["resubmitted_images"] >= 1
    assert {e["server"] for row in rows.values() for e in row["edits"]} == {a.url, b.url}

    # the inversion ran once per image and server: every edit that followed its image's round
    # trip on the same server took the Invert node from ComfyUI's cache (execution_cached)
    for row in rows.values():
        for edit in row["edits"]:
            if edit["server"] == row["round_trip_server"]:
                assert edit["inversion_cached"], row
    reused = report["edits_with_inversion_reused"]
    assert reused >= IMAGES * EDITS - report["resubmitted_images"]
    b_history = b.get("/history")
    (invert,) = nodes_of_type(api_prompt("edict_edit"), "EDICTInvert")  # the batch's prompts keep the example's ids
    cached_inverts = sum(any(kind == "execution_cached" and invert in data["nodes"]
                             for kind, data in entry["status"]["messages"]) for entry in b_history.values())
    assert cached_inverts == sum(e["inversion_cached"] for row in rows.values() for e in row["edits"]
                                 if e["server"] == b.url)

    # a rerun makes nothing again: no prompt submitted, no file rewritten
    mtimes = {p: p.stat().st_mtime_ns for p in out.rglob("edit_*.png")}
    rerun = subprocess.run(batch_command(manifest, two_servers, out), cwd=REPO, capture_output=True, text=True,
                           timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads((out / "report.json").read_text())
    assert again["prompts_submitted"] == 0 and again["prompts_run"] == 0
    assert len(b.get("/history")) == len(b_history)
    assert {p: p.stat().st_mtime_ns for p in out.rglob("edit_*.png")} == mtimes
    assert [row["round_trip_error"] for row in again["images"]] == errors

    # with no server left, the run fails clearly (here: the only server given is the dead one)
    alone = subprocess.run(batch_command(manifest, [a], tmp_path / "alone"), cwd=REPO, capture_output=True,
                           text=True, timeout=120)
    assert alone.returncode == 2 and "FAILED: no ComfyUI server left" in alone.stderr, alone.stderr

    print(f"\n[batch_edit] {IMAGES} images x {EDITS} edits, {STEPS} steps, two servers: {wall:.1f} s "
          f"(batch {report['wall_seconds']:.1f} s); server A killed after {a_done_when_killed} prompts; "
          f"prompts run: A {servers[a.url]['prompts_run']}, B {servers[b.url]['prompts_run']}; "
          f"{report['resubmitted_images']} images resubmitted; inversion reused in {reused} of "
          f"{report['edits_run']} edits; round-trip errors {', '.join(f'{e:.1e}' for e in errors)}; "
          f"rerun {again['wall_seconds']:.1f} s, 0 prompts")


def test_batch_edit_bdia_csv(two_servers, manifest, tmp_path):
    """--method bdia from a CSV manifest, one image and one edit, on the server that survived."""
    b = two_servers[1]
    shutil.copy(manifest.parent / "photos" / "picture0.png", tmp_path / "picture0.png")
    (tmp_path / "m.csv").write_text("image,source,edit\npicture0.png,a photo of a dog,a photo of a cat\n")
    out = tmp_path / "out"
    result = subprocess.run(batch_command(tmp_path / "m.csv", [b], out) + ["--method", "bdia"], cwd=REPO,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    report = json.loads((out / "report.json").read_text())
    (row,) = report["images"]
    assert row["round_trip_error"] <= ROUND_TRIP_BOUND
    assert row["edits"][0]["inversion_cached"] and (out / "picture0" / "edit_1.png").is_file()
    print(f"\n[batch_edit] BDIA: round-trip error {row['round_trip_error']:.1e}, {report['wall_seconds']:.1f} s")


def test_manifest_csv_and_json_agree(tmp_path):
    """The two manifest formats describe the same batch; paths are relative to the manifest."""
    from batch_edit.manifest import read_manifest

    Image.new("RGB", (8, 8)).save(tmp_path / "dog.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "cat.png")
    (tmp_path / "m.csv").write_text("image,source,edit\n"
                                    "dog.png,a dog,a cat\n"
                                    "cat.png,a cat,a dog\n"
                                    "dog.png,,a fox\n")
    (tmp_path / "m.json").write_text(json.dumps([{"image": "dog.png", "source": "a dog", "edits": ["a cat", "a fox"]},
                                                 {"image": "cat.png", "source": "a cat", "edits": "a dog"}]))
    expected = [{"image": str(tmp_path / "dog.png"), "source": "a dog", "edits": ["a cat", "a fox"]},
                {"image": str(tmp_path / "cat.png"), "source": "a cat", "edits": ["a dog"]}]
    assert read_manifest(str(tmp_path / "m.csv")) == expected
    assert read_manifest(str(tmp_path / "m.json")) == expected
    (tmp_path / "bad.json").write_text(json.dumps([{"image": "dog.png", "source": "a dog", "edits": []}]))
    with pytest.raises(SystemExit, match="at least one edit"):
        read_manifest(str(tmp_path / "bad.json"))


def test_manifest_refuses_images_outside_its_folder(tmp_path):
    """An absolute path, or a ../ that leads out of the manifest's folder, is refused with a
    message naming the manifest, the entry and the fix, before any server is asked anything
    (the server given here answers nothing: asked, the run would end 'no server left')."""
    from batch_edit.__main__ import main

    folder = tmp_path / "batch"
    (folder / "photos").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(folder / "photos" / "dog.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "elsewhere.png")
    (folder / "absolute.json").write_text(json.dumps([
        {"image": "photos/dog.png", "source": "a dog", "edits": ["a cat"]},
        {"image": str(tmp_path / "elsewhere.png"), "source": "a dog", "edits": ["a cat"]}]))
    (folder / "up.csv").write_text("image,source,edit\nphotos/dog.png,a dog,a cat\n"
                                   "photos/../../elsewhere.png,a dog,a cat\n")
    cases = {"absolute.json": ("entry 1 (counting from 0)", "an absolute path"),
             "up.csv": ("line 3", f"it resolves to {tmp_path / 'elsewhere.png'}")}
    for name, (where, why) in cases.items():
        with pytest.raises(SystemExit) as refused:
            main([str(folder / name), "--out", str(tmp_path / "out"), "--server", "http://127.0.0.1:9"])
        message = str(refused.value)
        assert message.startswith(f"{folder / name}, {where}: the image "), message
        assert f"is outside the manifest's folder ({why})" in message
        assert "Fix: move the image into that folder" in message and "photos/dog.png" in message
    assert not (tmp_path / "out").exists()


def test_prompts_are_the_example_workflows_with_the_batch_settings():
    """Every method's prompts come from example_workflows/api/<method>_edit.json: its nodes,
    the batch's settings on Invert and Sample, and an inversion (every node it reads) the same
    in the round trip and the edits, which is what lets ComfyUI's cache run it once."""
    from batch_edit.manifest import ROUND_TRIP
    from batch_edit.prompts import SAVE_INPUT, SAVE_ROUND_TRIP, Template
    from edict_core.spec import SPECS
    from harness.workflows import api_prompt

    class Picture:
        name, source, edits = "dog", "a photo of a dog", ["a photo of a cat", "a photo of a fox"]

    def upstream(prompt, node_id):
        links = [v[0] for v in prompt[node_id]["inputs"].values() if isinstance(v, list)]
        return {node_id: prompt[node_id], **{k: v for link in links for k, v in upstream(prompt, link).items()}}

    for spec in SPECS.values():
        template = Template(spec)
        example = api_prompt(f"{spec.name}_edit")
        settings = {"steps": 7, "cfg": 2.5, "scheduler": "exponential", "denoise": 0.7, "ckpt": CKPT_NAME,
                    "negative": "blurry", **spec.defaults}
        sampling = ("steps", "cfg", "scheduler", "denoise", *spec.defaults)
        round_trip = template.build(Picture, ROUND_TRIP, "batch_edit/dog.png", settings)
        edits = [template.build(Picture, k, "batch_edit/dog.png", settings) for k in range(2)]
        for prompt in [round_trip, *edits]:
            assert "PreviewImage" not in {node["class_type"] for node in prompt.values()}
            for node_id in (template.invert, template.sample):
                assert prompt[node_id]["class_type"] == example[node_id]["class_type"] == spec.node_id(
                    "Invert" if node_id == template.invert else "Sample")
                assert {k: prompt[node_id]["inputs"][k] for k in sampling} == {k: settings[k] for k in sampling}
            assert prompt[template.negative]["inputs"]["text"] == "blurry"
            assert prompt[template.ckpt]["inputs"]["ckpt_name"] == CKPT_NAME
        assert upstream(round_trip, template.invert) == upstream(edits[0], template.invert) == upstream(
            edits[1], template.invert)
        assert round_trip[template.sample]["inputs"]["positive"] == [template.source, 0]
        assert round_trip[SAVE_INPUT]["inputs"]["samples"] == [template.encode, 0]
        assert round_trip[SAVE_ROUND_TRIP]["inputs"]["samples"] == [template.sample, 0]
        assert [e[template.edit]["inputs"]["text"] for e in edits] == Picture.edits
        assert {k: v for k, v in edits[1].items() if k not in (template.edit, template.save)} == {
            k: v for k, v in edits[0].items() if k not in (template.edit, template.save)}
        assert set(edits[0]) - set(round_trip) >= {template.edit, template.save}


def test_images_are_read_when_submitted_and_kept_nowhere(tmp_path, monkeypatch):
    """Setting up a batch opens no picture (a fresh one) or only hashes it (a rerun with its
    record); the bytes are read for the upload and kept by nobody."""
    import builtins

    from batch_edit.manifest import Image as BatchImage

    picture = tmp_path / "dog.png"
    Image.new("RGB", (8, 8)).save(picture)
    entry = {"image": str(picture), "source": "a dog", "edits": ["a cat"]}
    opened, real_open = [], builtins.open
    monkeypatch.setattr(builtins, "open", lambda f, *a, **k: (opened.append(str(f)), real_open(f, *a, **k))[1])
    image = BatchImage(entry, "dog", str(tmp_path / "out"), {"method": "obelm"})
    assert str(picture) not in opened
    assert image.read() == picture.read_bytes() and opened.count(str(picture)) == 1
    image.save_record()
    again = BatchImage(entry, "dog", str(tmp_path / "out"), {"method": "obelm"})
    assert again.sha256 == image.sha256  # the record is kept: the picture was hashed...
    for kept in (image, again):  # ...but neither holds its bytes
        assert not any(isinstance(v, (bytes, bytearray)) for v in vars(kept).values())


def test_rerun_note_names_what_is_kept_and_what_is_redone(tmp_path):
    from batch_edit.manifest import ROUND_TRIP
    from batch_edit.manifest import Image as BatchImage
    from batch_edit.report import rerun_note

    images = []
    for name in ("done", "half", "fresh"):
        Image.new("RGB", (8, 8)).save(tmp_path / f"{name}.png")
        entry = {"image": str(tmp_path / f"{name}.png"), "source": "a dog", "edits": ["a cat", "a fox"]}
        images.append(BatchImage(entry, name, str(tmp_path / "out"), {"method": "obelm"}))
    done, half, _ = images
    for image, parts in ((done, [ROUND_TRIP, 0, 1]), (half, [ROUND_TRIP, 1])):
        for part in parts:
            if part == ROUND_TRIP:
                image.record["round_trip"] = {"error": 0.0, "server": "s", "seconds": 1.0}
            else:
                os.makedirs(image.dir, exist_ok=True)
                Image.new("RGB", (8, 8)).save(image.edit_file(part))
                image.record["edits"][str(part)] = {"prompt": image.edits[part], "file": "f"}
    assert rerun_note(images) == [
        "a rerun of the same command keeps the 5 outputs made so far and makes the other 4:",
        "  finished, kept: done",
        "  partly done, the rest redone: half (edit 1)",
        "  not started, done in full: fresh"]
    assert rerun_note(images[2:]) == ["nothing was finished: a rerun of the same command makes all 3 outputs"]


def without_sigint_ignored():
    """A child started from a background job inherits SIGINT ignored, where Python installs no
    KeyboardInterrupt handler: the test's SIGINT would then do nothing."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def ours_in_queue(server, client_id):
    queue = server.get("/queue")
    return {key: [item[1] for item in queue[key] if item[3].get("client_id") == client_id]
            for key in ("queue_running", "queue_pending")}


def test_obelm_batch_stops_on_ctrl_c_and_a_rerun_finishes_it(two_servers, manifest, tmp_path):
    """--method obelm (its spec's karras scheduler), one image and its 2 edits (the rerun note's
    lists are checked above, without a server), on the server that survived: it is up anyway,
    and on one thread it runs these prompts several times faster than the session's server
    does on a loaded 2-core machine. SIGINT once the batch's first prompt is queued: nothing of
    the batch is left waiting, the prompt running is interrupted, exit 130 with the rerun note;
    the rerun then makes the rest (measured: 8 s here, against 43 s on the session's server)."""
    server = two_servers[1]
    images = 1
    entries = json.loads(manifest.read_text())[:images]
    obelm_manifest = manifest.parent / "obelm.json"
    obelm_manifest.write_text(json.dumps(entries))
    out = tmp_path / "out"
    command = batch_command(obelm_manifest, [server], out) + ["--method", "obelm"]
    assert not any(server.get("/queue").values()), "the server is busy"
    process = subprocess.Popen(command, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               preexec_fn=without_sigint_ignored)
    try:
        deadline = time.time() + 120
        while not any(server.get("/queue").values()):
            if process.poll() is not None or time.time() > deadline:
                pytest.fail(f"no prompt of the batch was queued:\n{process.communicate()[0]}")
            time.sleep(0.02)
        process.send_signal(signal.SIGINT)
        log, _ = process.communicate(timeout=60)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, log
    report = json.loads((out / "report.json").read_text())
    left = ours_in_queue(server, report["client_id"])
    assert left["queue_pending"] == [], log
    deadline = time.time() + 60  # the interrupted prompt stops at its next step
    while left["queue_running"] and time.time() < deadline:
        time.sleep(0.2)
        left = ours_in_queue(server, report["client_id"])
    assert left == {"queue_running": [], "queue_pending": []}, log
    assert "[batch_edit] interrupted: " in log and "waiting prompts of this run deleted" in log, log
    assert "a rerun of the same command " in log, log
    made = report["prompts_run"]
    assert made < images * (1 + EDITS)
    # what reached the server either ran to the end before the Ctrl-C or was interrupted by it
    first_run = [entry["status"] for entry in server.get("/history").values()
                 if entry["prompt"][3].get("client_id") == report["client_id"]]
    assert all(status["status_str"] == "success" or "execution_interrupted" in {kind for kind, _ in status["messages"]}
               for status in first_run), first_run
    stopped = next(line for line in log.splitlines() if "[batch_edit] interrupted: " in line)

    rerun = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    again = json.loads((out / "report.json").read_text())
    assert again["prompts_run"] == images * (1 + EDITS) - made
    assert again["settings"]["method"] == "obelm" and again["settings"]["scheduler"] == "karras"
    for row in again["images"]:
        assert row["round_trip_error"] is not None and row["round_trip_error"] <= ROUND_TRIP_BOUND, row
        assert all(e["file"] and (out / e["file"]).is_file() and e["inversion_cached"] for e in row["edits"]), row
    history = server.get("/history")
    ran = [entry for entry in history.values() if entry["prompt"][3].get("client_id") == again["client_id"]]
    node_types = {node["class_type"] for entry in ran for node in entry["prompt"][2].values()}
    assert {"OBELMInvert", "OBELMSample"} <= node_types and not {"BDIAInvert", "EDICTInvert"} & node_types
    errors = ", ".join(f"{row['round_trip_error']:.1e}" for row in again["images"])
    print(f"\n[batch_edit] O-BELM, Ctrl-C after the first prompt queued: {made} of {images * (1 + EDITS)} prompts "
          f"made before it ({stopped.split(': ', 1)[1]}); rerun {again['wall_seconds']:.1f} s; round-trip errors "
          f"{errors}")

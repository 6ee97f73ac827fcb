"""scripts/batch_edit.py against two real ComfyUI servers (main.py --cpu, the tiny checkpoint):
6 drawn images, 2 edits each, 3 steps. One server is killed once the batch has collected an
image from it; the batch finishes on the other, loses nothing, reuses each image's inversion
through ComfyUI's cache, and a rerun submits nothing.

The servers run torch on one thread each (OMP_NUM_THREADS=1): two servers on a small shared
machine, each with a thread pool as wide as the machine, spend most of their time waiting on
each other (a tiny-UNet call measured 5.6 s with two threads, 0.5 s with one, at load 12 on
2 cores)."""

import json
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
from PIL import Image

from harness.comfy import CKPT_NAME, REPO, drawn_images

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
    command = [sys.executable, "-m", "scripts.batch_edit", str(manifest), "--out", str(out),
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
    cached_inverts = sum(any(kind == "execution_cached" and "invert" in data["nodes"]
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
    (tmp_path / "m.csv").write_text("image,source,edit\n"
                                    f"{manifest.parent / 'photos' / 'picture0.png'},a photo of a dog,a photo of a cat\n")
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
    from scripts.batch_edit import read_manifest

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

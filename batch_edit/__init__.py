"""Batch editing through ComfyUI's HTTP API: every image of a manifest inverted once (with any
exact method of the pack: EDICT, BDIA, O-BELM, Rex) and edited with each of its edit prompts, on
one or more ComfyUI servers.

    python -m batch_edit MANIFEST --server URL [--server URL ...] --out DIR
        [--method edict|bdia|obelm|rex] [--steps 50] [--cfg 3] [--denoise D] [--scheduler S] [--ckpt NAME]

Run it from the pack's folder (ComfyUI/custom_nodes/<this pack>), with ComfyUI's own Python
or any other that has torch, numpy, safetensors and tqdm. The servers are ordinary ComfyUI
servers with this pack installed and the checkpoint --ckpt in their models/checkpoints; the
command needs no file access to them.

Manifest: JSON or CSV (by the file's extension). Image paths are relative to the manifest and
must stay inside its folder: an absolute path, or one whose `..` leads out of it, is refused
before anything is sent, since every image named is uploaded to the servers.

  JSON, a list (or {"images": [...]}) of one object per image:
      [{"image": "photos/dog.png", "source": "a photo of a dog on the beach",
        "edits": ["a photo of a cat on the beach", "a photo of a fox on the beach"]}, ...]
  CSV, a header row image,source,edit and one row per edit; further rows of the same image
  repeat its path (their source may be left empty):
      image,source,edit
      photos/dog.png,a photo of a dog on the beach,a photo of a cat on the beach
      photos/dog.png,,a photo of a fox on the beach

Prompts. Each is made from the pack's example workflow example_workflows/api/<method>_edit.json
(the API-format copy of what the template browser offers): its nodes are found by type and
their inputs set (checkpoint, image, prompts, steps, cfg, scheduler, denoise, the method's
settings). An edit is that workflow with the edit prompt; the round trip is the same workflow
sampled with the SOURCE prompt, the input latent and the reconstruction saved by SaveLatent
(their relative error is the round-trip error).

How it runs. Images go to the servers round-robin, whole: each image is read and uploaded
(POST /upload/image) when its turn comes, and all its prompts (POST /prompt) go to that
server's queue at once, one after the other; each server's own queue does the rest, and the
command only polls (GET /queue, GET /history/<id>) and fetches the results (GET /view). The
inversion part is identical in all prompts of an image, so ComfyUI's cache runs it once per
image: the history of each edit lists the Invert node under execution_cached, and the report
says so ("inversion reused"). This needs ComfyUI's default cache (not --cache-none), and
holds because an image's prompts follow one another in one queue.

A server that stops answering (connection refused, or --timeout seconds without an answer,
--retries times in a row) is dropped: its unfinished images go, whole, round-robin to the
servers left. The run fails (exit 2) only when no server is left; an image whose prompt
ComfyUI rejects or fails is reported and the run ends with exit 1.

Ctrl-C stops the batch cleanly: the prompts it queued that are still waiting are deleted from
every server's queue, the one of its prompts that is running is interrupted (other users'
prompts are left alone), and it says what a rerun will keep and what it will make. Exit 130.

Output (--out DIR):
  DIR/<name>/edit_<k>.png   the k-th edit of the image <name> (the image file's stem)
  DIR/<name>/record.json    what made them: settings, prompts, round-trip error, server, time
  DIR/report.md, DIR/report.json   every image: round-trip error, each edit's file, server, time

Resumable: an edit whose file exists and whose record matches the image, its prompts and the
settings is not run again, nor is a round trip already recorded; a rerun of a finished batch
submits nothing.
"""

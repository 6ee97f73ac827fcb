"""The manifest (which images, with which prompts) and each image's record of what is done."""

import csv
import hashlib
import json
import os

ROUND_TRIP = "round_trip"  # the part of an image that measures the round trip; edits are 0, 1, ...
HASH_CHUNK = 1 << 20


def read_manifest(path):
    """[{image (absolute path), source, edits}] in manifest order, one entry per image."""
    folder = os.path.dirname(os.path.abspath(path))
    located = _csv_entries(path) if path.lower().endswith(".csv") else _json_entries(path)
    seen, entries = set(), []
    for where, entry in located:
        if not isinstance(entry.get("image"), str) or not entry["image"] or not entry.get("source") \
                or not entry["edits"]:
            raise SystemExit(f"{path}, {where}: every image needs an image path, a source prompt and at least "
                             f"one edit (see --help): {entry}")
        entry["image"] = inside_folder(path, folder, where, entry["image"])
        if entry["image"] in seen:
            raise SystemExit(f"{path}, {where}: {entry['image']} is listed twice")
        if not os.path.isfile(entry["image"]):
            raise SystemExit(f"{path}, {where}: no image {entry['image']}")
        seen.add(entry["image"])
        entries.append(entry)
    return entries


def inside_folder(manifest, folder, where, image):
    """The absolute path of a manifest's image, refused when it leaves the manifest's folder:
    every image named is uploaded to the servers, so a manifest from elsewhere must not be able
    to send any file of this machine. `..` is resolved by name, not through links, so a photos
    folder linked in from elsewhere is still the user's own choice."""
    resolved = os.path.normpath(os.path.join(folder, image))
    if not os.path.isabs(image) and os.path.commonpath([folder, resolved]) == folder:
        return resolved
    why = "an absolute path" if os.path.isabs(image) else f"it resolves to {resolved}"
    raise SystemExit(
        f"{manifest}, {where}: the image {image!r} is outside the manifest's folder ({why}). Image paths "
        f"must be relative to the manifest and stay inside its folder {folder}, since every image named is "
        f"uploaded to the servers. Fix: move the image into that folder (or one below it) and write its "
        f"path relative to the manifest, e.g. photos/dog.png; or move the manifest up to a folder that "
        f"holds all its images.")


def _csv_entries(path):
    """(where, entry) per image; an image's later rows add edits to its first row's entry."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not {"image", "source", "edit"} <= set(reader.fieldnames or ()):
            raise SystemExit(f"{path}: the header must be image,source,edit (it is {reader.fieldnames})")
        located, by_image = [], {}
        for row in reader:
            image, source, edit = ((row[k] or "").strip() for k in ("image", "source", "edit"))
            if not image:
                continue
            where = f"line {reader.line_num}"
            entry = by_image.get(image)
            if entry is None:
                entry = by_image[image] = {"image": image, "source": source, "edits": []}
                located.append((where, entry))
            elif source and source != entry["source"]:
                raise SystemExit(f"{path}, {where}: {image} has two source prompts")
            if edit:
                entry["edits"].append(edit)
    return located


def _json_entries(path):
    with open(path) as f:
        data = json.load(f)
    entries = data.get("images") if isinstance(data, dict) else data
    if not isinstance(entries, list) or not all(isinstance(e, dict) for e in entries):
        raise SystemExit(f"{path}: expected a list of {{image, source, edits}} objects")
    return [(f"entry {i} (counting from 0)",
             dict(e, edits=[e["edits"]] if isinstance(e.get("edits"), str) else list(e.get("edits") or [])))
            for i, e in enumerate(entries)]


def image_names(entries):
    """DIR/<name> per image: the file's stem, with -2, -3, ... for stems met again."""
    names, used = [], set()
    for entry in entries:
        stem = os.path.splitext(os.path.basename(entry["image"]))[0]
        name, n = stem, 1
        while name in used:
            n += 1
            name = f"{stem}-{n}"
        used.add(name)
        names.append(name)
    return names


def file_sha256(path):
    """Read in chunks: a 10,000-photo batch hashes every photo on a rerun, and keeps none."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def write_atomically(path, data):
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, path)


class Image:
    """One image of the manifest: its prompts, its record in DIR/<name>/record.json, and the
    parts still to run (ROUND_TRIP and edit indices) with the server and prompt ids they wait on.
    The picture itself is read only to upload it (read()), so a big batch does not sit in memory."""

    def __init__(self, entry, name, out, settings):
        self.path, self.source, self.edits, self.name = entry["image"], entry["source"], entry["edits"], name
        self.dir = os.path.join(out, name)
        self.settings = settings
        self.record = self._load_record()
        self.failed = {}  # part -> error message
        self.server, self.prompt_ids = None, {}  # where its unfinished parts wait, part -> prompt id

    def _fresh_record(self, sha256=None):
        return {"image": self.path, "sha256": sha256, "source": self.source, "settings": self.settings,
                "round_trip": None, "edits": {}}

    def _load_record(self):
        """The record of an earlier run, if it was made from this picture, prompt and settings."""
        try:
            with open(self.record_path) as f:
                record = json.load(f)
        except (OSError, ValueError):
            return self._fresh_record()
        # the cheap comparisons first: the picture is hashed only when the record could be kept
        if (not isinstance(record, dict) or record.get("source") != self.source
                or record.get("settings") != self.settings or record.get("sha256") != file_sha256(self.path)):
            return self._fresh_record()
        return record

    def read(self):
        """The picture's bytes, for one upload. A picture changed since its record was made
        (or since the start of this run) starts its record over."""
        with open(self.path, "rb") as f:
            data = f.read()
        sha256 = hashlib.sha256(data).hexdigest()
        if self.record["sha256"] is None:
            self.record["sha256"] = sha256
        elif self.record["sha256"] != sha256:
            self.record = self._fresh_record(sha256)
        return data

    @property
    def sha256(self):
        return self.record["sha256"]

    @property
    def record_path(self):
        return os.path.join(self.dir, "record.json")

    def edit_file(self, k):
        return os.path.join(self.dir, f"edit_{k + 1}.png")

    def done(self, part):
        if part == ROUND_TRIP:
            return self.record["round_trip"] is not None
        entry = self.record["edits"].get(str(part))
        return bool(entry) and entry["prompt"] == self.edits[part] and os.path.isfile(self.edit_file(part))

    def parts(self):
        return [ROUND_TRIP, *range(len(self.edits))]

    def pending(self):
        return [p for p in self.parts() if not self.done(p) and p not in self.failed]

    def save_record(self):
        os.makedirs(self.dir, exist_ok=True)
        write_atomically(self.record_path, json.dumps(self.record, indent=1).encode())


def part_name(part):
    return "round trip" if part == ROUND_TRIP else f"edit {part + 1}"

"""Ready for the Comfy Registry: the archive comfy-cli packs (git-tracked files minus
.comfyignore) holds only what runs inside ComfyUI, none of it what the registry's scanner
flags, and it loads in ComfyUI on its own; `comfy node validate` passes with no warnings;
pyproject has what the registry shows; the publish workflow fires only on a version change;
the example workflows carry the registry id of the pack's nodes."""

import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from harness import node_docs
from harness.comfy import PACK_NAME, REPO, comfyui_path, pack_module

COMFY_CLI = os.path.join(os.path.dirname(sys.executable), "comfy")
SHIPPED = ("__init__.py", "nodes/", "comfy_adapter/", "edict_core/", "example_workflows/", "web/",
           "README.md", "LICENSE", "pyproject.toml")
# What the registry's scanner flags in a pack (process and network calls, eval/exec), as
# whole words; "websocket" in README's prose is not "socket".
FLAGGED = [r"\bsubprocess\b", r"\bsocket\b", r"\burllib\b", r"\bos\.system\b", r"\beval\(", r"\bexec\(",
           r"\bClientSession\b", r"\.connect\("]
PIP_AT_RUNTIME = r"\bpip\b"  # in code: a pip install at import or run time
REPO_URL = "https://github.com/exact-inversion/comfyui-exact-inversion"
RAW_URL = "https://raw.githubusercontent.com/exact-inversion/comfyui-exact-inversion/main/"


def cli_env(tmp_path):
    """comfy-cli with its config (telemetry choice) in a folder of the test's own."""
    return dict(os.environ, HOME=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / ".config"))


def repo_files():
    """The files a commit of this working tree would hold: tracked and untracked, less what
    .gitignore ignores and what was deleted."""
    listed = subprocess.check_output(["git", "-C", REPO, "ls-files", "--cached", "--others", "--exclude-standard"],
                                     text=True).splitlines()
    return sorted(f for f in set(listed) if os.path.isfile(os.path.join(REPO, f)))


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """{name: bytes} of the zip `comfy node pack` makes of this tree, committed: the files are
    copied into a fresh git repository (so files not committed yet count), and comfy-cli
    itself packs it there."""
    assert os.access(COMFY_CLI, os.X_OK), f"no {COMFY_CLI}: run scripts/setup.sh (it installs comfy-cli)"
    work = tmp_path_factory.mktemp("pack")
    tree = work / PACK_NAME
    for name in repo_files() + [".comfyignore"]:
        os.makedirs(tree / os.path.dirname(name), exist_ok=True)
        shutil.copy2(os.path.join(REPO, name), tree / name)
    subprocess.run(["git", "init", "-q"], cwd=tree, check=True)
    subprocess.run(["git", "add", "-A"], cwd=tree, check=True)
    result = subprocess.run([COMFY_CLI, "--skip-prompt", "--no-enable-telemetry", "node", "pack"], cwd=tree,
                            env=cli_env(work), capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    with zipfile.ZipFile(tree / "node.zip") as zf:
        return {info.filename: zf.read(info) for info in zf.infolist() if not info.is_dir()}


def test_archive_holds_only_what_runs_in_comfyui(archive):
    expected = {f for f in repo_files() if f in SHIPPED or f.startswith(tuple(s for s in SHIPPED if s.endswith("/")))}
    assert set(archive) == expected
    for required in ("__init__.py", "nodes/__init__.py", "comfy_adapter/__init__.py", "edict_core/spec.py",
                     "README.md", "LICENSE", "pyproject.toml", "web/docs/EDICTInvert.md",
                     "example_workflows/edict_edit.json"):
        assert required in archive
    for repo_only in ("tests/", "harness/", "bench/", "scripts/", "batch_edit/", "docs/", ".github/", ".ci/"):
        assert not [name for name in archive if name.startswith(repo_only)], repo_only
    # the repository's one weight file, the bench's learned model, stays in the repository
    assert "bench/learned_model.safetensors" in repo_files()
    assert not [name for name in archive if name.endswith((".safetensors", ".ckpt", ".pt"))]


def test_nothing_in_the_archive_is_what_the_registry_flags(archive):
    flagged = []
    for name, data in archive.items():
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError:
            assert name.endswith((".jpg", ".png")), f"{name}: a binary file in the archive"
            continue
        patterns = FLAGGED + ([PIP_AT_RUNTIME] if name.endswith(".py") else [])
        flagged += [f"{name}: {p}" for p in patterns if re.search(p, text)]
    assert flagged == []


def test_the_archive_alone_loads_in_comfyui(archive, tmp_path, comfy):
    """Unpacked as the Manager installs it (custom_nodes/<id>), in a fresh ComfyUI process: every
    node of the pack registers, and its web folder (the help pages) is served."""
    pack = tmp_path / "custom_nodes" / PACK_NAME
    for name, data in archive.items():
        os.makedirs(pack / os.path.dirname(name), exist_ok=True)
        (pack / name).write_bytes(data)
    script = f"""
import asyncio, json, sys
sys.path.insert(0, {comfyui_path()!r})
import comfy.options
comfy.options.enable_args_parsing(False)
from comfy.cli_args import args
args.cpu = True
import nodes
before = set(nodes.NODE_CLASS_MAPPINGS)
assert asyncio.run(nodes.load_custom_node({str(pack)!r})), "the loader failed to import the pack"
print(json.dumps({{"nodes": sorted(set(nodes.NODE_CLASS_MAPPINGS) - before),
                  "web": nodes.EXTENSION_WEB_DIRS.get({PACK_NAME!r})}}))
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            cwd=str(tmp_path))
    assert result.returncode == 0, result.stderr[-4000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded["nodes"] == sorted(pack_module("nodes").NODE_CLASS_MAPPINGS)
    assert os.path.realpath(loaded["web"]) == os.path.realpath(pack / "web")


def test_comfy_node_validate_passes_with_no_warnings(tmp_path):
    result = subprocess.run([COMFY_CLI, "--skip-prompt", "--no-enable-telemetry", "node", "validate"], cwd=REPO,
                            env=cli_env(tmp_path), capture_output=True, text=True, timeout=300)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert "All validation checks passed successfully" in output
    assert "warning" not in output.lower(), output


def test_pyproject_has_what_the_registry_shows(comfy):
    from PIL import Image
    from comfy_cli.registry.config_parser import extract_node_configuration

    config = extract_node_configuration(os.path.join(REPO, "pyproject.toml"))
    project, tool = config.project, config.tool_comfy
    assert project.name == PACK_NAME and re.fullmatch(r"\d+\.\d+\.\d+", project.version)
    # the oldest ComfyUI the tests run on (scripts/test.sh --both-versions)
    with open(os.path.join(REPO, "scripts", "test.sh")) as f:
        assert "run_on 0.3.75" in f.read()
    assert project.supported_comfyui_version == ">=0.3.75"
    assert project.supported_os == ["OS Independent"]
    assert project.urls.repository == project.urls.homepage == REPO_URL
    assert project.urls.documentation.startswith(REPO_URL) and project.urls.issues == REPO_URL + "/issues"
    assert tool.publisher_id and tool.display_name
    # Icon: square, at most 400 x 400; Banner: 21:9. Both in the repository, fetched from GitHub.
    for url, check in ((tool.icon, lambda w, h: w == h <= 400), (tool.banner_url, lambda w, h: 9 * w == 21 * h)):
        assert url.startswith(RAW_URL), url
        with Image.open(os.path.join(REPO, url[len(RAW_URL):])) as image:
            assert image.format == "PNG" and check(*image.size), (url, image.size)
    # ComfyUI itself reads the pyproject when it loads the pack (its web folder, its name).
    from comfy_config import config_parser

    assert config_parser.extract_node_configuration(REPO).project.name == PACK_NAME


def workflow():
    import yaml

    with open(os.path.join(REPO, ".github", "workflows", "publish.yml")) as f:
        return yaml.safe_load(f)


def test_publish_workflow_follows_the_publish_node_action():
    flow = workflow()
    triggers = flow[True]  # YAML 1.1 reads the key `on` as true
    assert triggers["push"] == {"branches": ["main"], "paths": ["pyproject.toml"]}
    steps = flow["jobs"]["publish-node"]["steps"]
    publish = [s for s in steps if str(s.get("uses", "")).startswith("Comfy-Org/publish-node-action@")]
    assert len(publish) == 1
    # the action that holds the registry secret runs a reviewed commit, never a moving branch or tag
    assert re.fullmatch(r"Comfy-Org/publish-node-action@[0-9a-f]{40}", publish[0]["uses"]), publish[0]["uses"]
    assert publish[0]["with"] == {"personal_access_token": "${{ secrets.REGISTRY_ACCESS_TOKEN }}"}
    assert publish[0]["if"] == "steps.version.outputs.changed == 'true'"


@pytest.mark.parametrize("old, new, changed", [("0.1.0", "0.1.1", "true"), ("0.1.0", "0.1.0", "false")])
def test_publish_workflow_publishes_only_a_new_version(tmp_path, old, new, changed):
    """The workflow's version check, run as GitHub runs it, on a repository whose push changed
    pyproject (its description, or its version)."""
    (step,) = [s for s in workflow()["jobs"]["publish-node"]["steps"] if s.get("id") == "version"]
    script = step["run"].replace("${{ github.event_name }}", "push")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-C", str(tmp_path)]
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\nversion = "{old}"\n')
    subprocess.run(git + ["add", "-A"], check=True)
    subprocess.run(git + ["commit", "-qm", "before"], check=True)
    before = subprocess.check_output(git + ["rev-parse", "HEAD"], text=True).strip()
    (tmp_path / "pyproject.toml").write_text(f'[project]\nname = "x"\ndescription = "d"\nversion = "{new}"\n')
    subprocess.run(git + ["commit", "-qam", "push"], check=True)
    output = tmp_path / "github_output"
    subprocess.run(["bash", "-e", "-c", script], cwd=tmp_path, check=True, capture_output=True,
                   env=dict(os.environ, BEFORE=before, GITHUB_OUTPUT=str(output)))
    assert output.read_text() == f"changed={changed}\n"


def test_workflows_carry_the_registry_id_on_every_pack_node(comfy):
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        project = tomllib.load(f)["project"]
    pack_ids = set(pack_module("nodes").NODE_CLASS_MAPPINGS)
    for path in node_docs.workflow_files():
        with open(path) as f:
            text = f.read()
        nodes = node_docs.pack_nodes(json.loads(text), pack_ids)
        assert nodes, f"{path}: no node of the pack"
        for node in nodes:
            properties = node.get("properties", {})
            assert (properties.get("cnr_id"), properties.get("ver")) == (project["name"], project["version"]), (
                f"{os.path.basename(path)}: node {node['id']} ({node['type']}): run `python -m harness.node_docs`")
        assert node_docs.stamped(text, pack_ids, project["name"], project["version"]) == text

"""The docs name what the code has: every method of edict_core.spec.SPECS in README, pyproject,
the pack's docstring and the batch command's help; README's workflow count is the folder's, and
its training time and accuracy of the learned model are the manifest's. (The node tables and
help pages are generated and checked in test_node_table / test_node_docs.)
"""

import contextlib
import glob
import io
import json
import os
import re
import tomllib

from edict_core.spec import SPECS

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NUMBERS = {w: i for i, w in enumerate("zero one two three four five six seven eight nine ten eleven twelve".split())}


def _read(*parts):
    with open(os.path.join(REPO, *parts)) as f:
        return f.read()


def test_every_method_is_named_wherever_the_methods_are_listed():
    readme = _read("README.md")
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        description = tomllib.load(f)["project"]["description"]
    places = {"README's title": readme.splitlines()[0], "pyproject's description": description,
              "__init__.py's docstring": _read("__init__.py").split('"""')[1],
              "batch_edit's docstring": _read("batch_edit", "__init__.py").split('"""')[1]}
    for where, text in places.items():
        missing = [s.title for s in SPECS.values() if s.title not in text]
        assert not missing, f"{where} leaves out {missing}: {text[:200]}"
    ids = "|".join(SPECS)
    for where, text in (("README", readme), ("batch_edit's docstring", places["batch_edit's docstring"])):
        listed = re.findall(r"--method ([a-z|]+)\]", text)
        assert listed and all(m == ids for m in listed), (where, listed, ids)


def test_the_batch_commands_help_offers_every_method():
    from batch_edit.__main__ import parse_args

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        parse_args(["--help"])
    assert "{" + ",".join(SPECS) + "}" in out.getvalue(), out.getvalue()[:500]


def test_readme_counts_the_example_workflows():
    count = len(glob.glob(os.path.join(REPO, "example_workflows", "*.json")))
    said = re.search(r"`example_workflows/` holds (\w+) workflows", _read("README.md")).group(1)
    assert NUMBERS.get(said, said) == count, (said, count)


def test_readme_gives_the_committed_models_training_time():
    """README's training time of the learned model is the manifest's, in whole minutes."""
    manifest = json.loads(_read("bench", "learned_model.json"))
    said = re.search(r"The committed run took (\d+) minutes on 2 CPU cores", _read("README.md"))
    assert said, "README does not say how long the learned model took to train"
    assert int(said.group(1)) == round(manifest["seconds"] / 60), (said.group(1), manifest["seconds"])


def test_readme_gives_the_committed_models_accuracy():
    """README's cfg 3 figures of the learned model are the manifest's (200 held-out captions)."""
    manifest = json.loads(_read("bench", "learned_model.json"))
    said = re.search(r"On (\d+) held-out captions at cfg 3 it draws the right colour ([\d.]+) of the time,\s+"
                     r"the right shape ([\d.]+) and the right background ([\d.]+) ", _read("README.md"))
    assert said, "README does not give the learned model's accuracy at cfg 3"
    measured = manifest["accuracy"]
    assert int(said.group(1)) == measured["count"]
    assert [float(v) for v in said.groups()[1:]] == [measured["cfg 3"][k] for k in ("color", "shape", "background")], \
        (said.groups(), measured["cfg 3"])

"""Commands run from the repository root; a package so that `python -m scripts.batch_edit` finds it."""

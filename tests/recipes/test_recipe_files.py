"""Every TOML file under recipes/ (recipes/paper/ included) is usable as it
stands: a recipe resolves against the schema (`dsee config FILE`), a sweep (a
file with a top-level `recipe = ` key) expands (`dsee sweep FILE --dry-run`)
into exactly the runs its [grid] and [zip] lists imply, and into the number
a `# runs: ... = N` comment in it claims.

The sweeps expand with --set run.out_dir=<tmp>/out from an empty working
folder: their sweep.tsv and sweep.commands must land in <tmp>/out/<name>/ and
nothing in the working folder, so a user's --set run.out_dir moves a whole
paper sweep; --set paths.models and paths.data (README.md's commands) reach
every run. No model or dataset is read: expanding checks keys and values,
not the folders they name.
"""
import math
import pathlib
import re
import subprocess
import tomllib

import pytest

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
FILES = sorted((REPO / "recipes").rglob("*.toml"))
NAME_MAX = 255  # a run directory's name is one path component


def is_sweep(table):
    return "recipe" in table


def implied_runs(table):
    """The product of the [grid] list lengths and of each zip group's length."""
    def lists(section, prefix=""):
        out = {}
        for key, value in section.items():
            if isinstance(value, dict):
                out.update(lists(value, f"{prefix}{key}."))
            else:
                out[prefix + key] = value
        return out

    runs = math.prod(len(values) for values in lists(table.get("grid", {})).values())
    zips = table.get("zip", [])
    for group in [zips] if isinstance(zips, dict) else zips:
        lengths = {len(values) for values in lists(group).values()}
        assert len(lengths) <= 1, f"a zip group with lists of unequal lengths: {sorted(lengths)}"
        runs *= lengths.pop() if lengths else 1
    return runs


def claimed_runs(text):
    """N of a '# runs: ... = N' comment, or None."""
    match = re.search(r"^#\s*runs:.*=\s*([0-9]+)\s*$", text, re.MULTILINE)
    return int(match.group(1)) if match else None


def test_recipe_folder_has_files():
    assert any(f.parent.name == "paper" for f in FILES), "recipes/paper/ holds no TOML file"


@pytest.mark.parametrize("path", FILES, ids=[str(f.relative_to(REPO)) for f in FILES])
def test_recipe_file_resolves_or_expands(dsee, tmp_path, path):
    dsee = str(pathlib.Path(dsee).resolve())  # the runs start in a folder of their own
    text = path.read_text()
    table = tomllib.loads(text)
    work = tmp_path / "cwd"
    work.mkdir()
    if not is_sweep(table):
        done = subprocess.run([dsee, "config", str(path)], cwd=work, capture_output=True, text=True)
        assert done.returncode == 0, f"dsee config {path} failed:\n{done.stderr}"
        return

    out = tmp_path / "out"
    # As README.md's "Reproducing the paper" runs them: the folders moved by --set.
    done = subprocess.run([dsee, "sweep", str(path), "--dry-run", "--set", f"run.out_dir={out}", "--set",
                           "paths.models=/models", "--set", "paths.data=/data"], cwd=work, capture_output=True,
                          text=True)
    assert done.returncode == 0, f"dsee sweep {path} --dry-run failed:\n{done.stderr}"
    commands = [line for line in done.stdout.splitlines() if line.strip()]
    expected = implied_runs(table)
    assert len(commands) == expected, f"{len(commands)} runs printed, the file's lists imply {expected}"
    claimed = claimed_runs(text)
    if claimed is not None:
        assert claimed == expected, f"the file's '# runs:' comment says {claimed}, its lists imply {expected}"

    folder = out / table.get("name", path.stem)
    assert (folder / "sweep.commands").read_text().splitlines() == commands
    assert list(work.iterdir()) == [], "the sweep wrote into the working folder despite --set run.out_dir"
    rows = (folder / "sweep.tsv").read_text().splitlines()[1:]
    assert len(rows) == expected
    for row in rows:
        assert "paths.data=/data" in row.split("\t")[3], row
        name = row.split("\t")[1]
        assert len(name) <= NAME_MAX, f"run directory name of {len(name)} characters: {name}"
        assert row.split("\t")[2].startswith(str(folder)), row

"""`dsee report --table` end to end: real sweeps, then the paper's Table 1 and
Table 6 layouts, checked against an independent Python reading of the runs.

The fixture generates an SST-2-format task whose label follows a rule a
model can learn (a sentence holds one sentiment word among fillers: positive
→ 1), trains a WordPiece vocabulary on it, saves a tiny random BERT with
transformers, and runs two shortened sweeps with `dsee sweep`, side by side:
  - Table-1-shaped: LoRA and DSEE (LoRA + sparse S) at r = 2 and r = 4, seeds
    1 and 2 (8 runs);
  - Table-6-shaped: DSEE with 1 and 2 attention heads removed per layer and
    re-tuned, seeds 1 and 2 (4 runs).
Then:
  - Markdown: the expected rows and columns, each cell `mean ± std (2)`;
  - CSV parsed back: every mean, sample std and per-seed value equals
    Python's statistics over the runs' own summary.json (config.toml read
    with tomllib), the trainable counts and FLOPs ratios likewise;
  - a deleted summary.json shows as failed, a deleted run folder as missing,
    both counted in their cells and listed under the table;
  - --plot writes the PNGs docs/report.md lists, each opened with PIL: the
    documented pixel size and not one flat colour.
"""
import csv
import io
import json
import os
import random
import re
import shutil
import statistics
import subprocess
import tomllib

import pytest

from harness import check, check_close, check_equal
from harness.models import tiny_bert_for_vocabulary, wordpiece_vocabulary

POSITIVE = ["great", "good", "fine", "happy"]
NEGATIVE = ["bad", "awful", "sad", "poor"]
FILLER = "the a movie film plot actor story scene was is very quite really".split()


def write_sst2(folder, rng, n_train=96, n_dev=32):
    """train.tsv and dev.tsv in SST-2's layout; returns every sentence."""
    os.makedirs(folder, exist_ok=True)
    sentences = []
    for name, n in (("train.tsv", n_train), ("dev.tsv", n_dev)):
        with open(os.path.join(folder, name), "w", encoding="utf-8", newline="") as f:
            f.write("sentence\tlabel\n")
            for i in range(n):
                label = i % 2
                words = [rng.choice(FILLER) for _ in range(rng.randint(1, 3))]
                words.insert(rng.randint(0, len(words)), rng.choice(POSITIVE if label else NEGATIVE))
                sentences.append(" ".join(words))
                f.write(f"{sentences[-1]}\t{label}\n")
    return sentences


BASE = """[run]
name = "base"
out_dir = "{runs}"
[model]
path = "{model}"
[task]
name = "sst2"
data_dir = "{data}"
max_seq_length = 16
[tuning]
method = "dsee"
rank = 2
alpha = 8.0
[omega]
c = 4
variant = "tolerance"
max_rank = 4
[train]
lr = 1e-1
epochs = 6
batch_size = 16
[retune]
epochs = 1
"""

TABLE1 = """recipe = "base.toml"
name = "table1"
[grid]
"run.seed" = [1, 2]
[zip]
"tuning.method" = ["lora", "dsee", "lora", "dsee"]
"tuning.rank" = [2, 2, 4, 4]
"""

TABLE6 = """recipe = "base.toml"
name = "table6"
[grid]
"run.seed" = [1, 2]
"prune.kind" = ["heads"]
"prune.heads_per_layer" = [1, 2]
"""


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory, dsee):
    """The folder holding runs/table1 and runs/table6, both finished."""
    work = str(tmp_path_factory.mktemp("report"))
    sentences = write_sst2(f"{work}/sst2", random.Random(3))
    with open(f"{work}/corpus.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(sentences))
    model = wordpiece_vocabulary(f"{work}/corpus.txt", f"{work}/model", vocab_size=80, min_frequency=1)
    with open(f"{model}/tokenizer_config.json", "w") as f:
        json.dump({"do_lower_case": True}, f)
    tiny_bert_for_vocabulary(model)
    with open(f"{work}/base.toml", "w") as f:
        f.write(BASE.format(runs=f"{work}/runs", model=model, data=f"{work}/sst2"))
    for name, text in (("table1", TABLE1), ("table6", TABLE6)):
        with open(f"{work}/{name}.toml", "w") as f:
            f.write(text)
    # The two sweeps side by side (two cores), one thread each.
    env = dict(os.environ, OMP_NUM_THREADS="1")
    processes = [subprocess.Popen([dsee, "sweep", f"{work}/{name}.toml"], stdout=subprocess.PIPE,
                                  stderr=subprocess.STDOUT, text=True, env=env) for name in ("table1", "table6")]
    for name, p in zip(("table1", "table6"), processes):
        out, _ = p.communicate(timeout=240)
        check(f"dsee sweep {name} exits 0", p.returncode == 0, out[-3000:])
    return work


def report(dsee, *args):
    r = subprocess.run([dsee, "report", *args], capture_output=True, text=True)
    check(f"dsee report {' '.join(args)} exits 0", r.returncode == 0, r.stdout + r.stderr)
    return r.stdout


def python_runs(sweep_dir):
    """{run folder name: (its config.toml as a dict, its summary.json)} of the finished runs, by Python alone."""
    out = {}
    for name in sorted(os.listdir(sweep_dir)):
        summary = os.path.join(sweep_dir, name, "summary.json")
        if os.path.exists(summary):
            with open(os.path.join(sweep_dir, name, "config.toml"), "rb") as f:
                config = tomllib.load(f)
            with open(summary) as f:
                out[name] = (config, json.load(f))
    return out


def csv_rows(text):
    return {(r["row"], r["column"], r["quantity"]): r for r in csv.DictReader(io.StringIO(text))}


def check_cell(label, row, values, seeds):
    """A CSV line against the runs' values in run order: n, mean, sample std, the per-seed values."""
    check_equal(f"{label}: n", int(row["n"]), len(values))
    check_equal(f"{label}: seeds", row["seeds"].split(";"), seeds)
    check_close(f"{label}: per-seed values", [float(v) for v in row["values"].split(";")], values, abs=1e-12)
    check_close(f"{label}: mean", float(row["mean"]), statistics.mean(values), abs=1e-12)
    check_close(f"{label}: sample std", float(row["std"]), statistics.stdev(values), abs=1e-12)


def test_table1_markdown_and_csv_equal_the_runs(sweeps, dsee):
    markdown = report(dsee, f"{sweeps}/runs/table1", "--table", "1")
    print(markdown)
    check("Table 1's title", markdown.startswith("## Table 1: LoRA and DSEE"), markdown[:80])
    check("header: the setting, the task's main metric, the trainable count",
          "| setting | sst2 (accuracy) | trainable |" in markdown)
    runs = python_runs(f"{sweeps}/runs/table1")
    check_equal("8 finished runs", len(runs), 8)
    labels = {}
    for name, (config, summary) in runs.items():
        labels.setdefault(f"{config['tuning']['method']} r={config['tuning']['rank']}", []).append(
            (config["run"]["seed"], summary))
    for label, group in labels.items():
        trainable = {s["trainable_parameters"] for _, s in group}
        check_equal(f"{label}: one trainable count", len(trainable), 1)
        line = re.search(rf"^\| {re.escape(label)} \| (\d\.\d{{3}}) ± (\d\.\d{{3}}) \(2\) \| (\d+) \|$", markdown,
                         re.M)
        check(f"row '{label}' with mean ± std (2) and its trainable count", line is not None, markdown)
        check_equal(f"{label}: trainable", int(line.group(3)), trainable.pop())
        accuracies = [s["dev"]["accuracy"] for _, s in sorted(group, key=lambda g: g[0])]
        check_equal(f"{label}: the printed mean", line.group(1), f"{statistics.mean(accuracies):.3f}")
    check("the rows grouped by method, then rank", re.findall(r"^\| (\w+ r=\d) \|", markdown, re.M)
          == ["lora r=2", "lora r=4", "dsee r=2", "dsee r=4"], markdown)
    check("DSEE trains more than LoRA at one rank (S)", labels["dsee r=2"][0][1]["trainable_parameters"]
          > labels["lora r=2"][0][1]["trainable_parameters"])

    rows = csv_rows(report(dsee, f"{sweeps}/runs/table1", "--table", "1", "--format", "csv"))
    for label, group in labels.items():
        group.sort(key=lambda g: g[0])
        seeds = [str(seed) for seed, _ in group]
        check_cell(f"{label} accuracy", rows[(label, "sst2", "accuracy")], [s["dev"]["accuracy"] for _, s in group],
                   seeds)
        check_cell(f"{label} trainable", rows[(label, "sst2", "trainable_parameters")],
                   [float(s["trainable_parameters"]) for _, s in group], seeds)
    means = {float(rows[(label, "sst2", "accuracy")]["mean"]) for label in labels}
    check("the arms' accuracies differ (the table is not one number repeated)", len(means) > 1, f"{means}")


def test_table6_heads_and_flops_ratio(sweeps, dsee):
    markdown = report(dsee, f"{sweeps}/runs/table6", "--table", "6")
    print(markdown)
    check("header: setting, metric, FLOPs ratio", "| setting | sst2 (accuracy) | FLOPs ratio |" in markdown)
    rows = csv_rows(report(dsee, f"{sweeps}/runs/table6", "--table", "6", "--format", "csv"))
    ratios = {}
    for heads in (1, 2):
        group = sorted(((c["run"]["seed"], s) for c, s in python_runs(f"{sweeps}/runs/table6").values()
                        if c["prune"]["heads_per_layer"] == heads), key=lambda g: g[0])
        check_equal(f"heads={heads}: 2 runs", len(group), 2)
        seeds = [str(seed) for seed, _ in group]
        check_cell(f"heads={heads} accuracy", rows[(f"heads={heads}", "sst2", "accuracy")],
                   [s["dev"]["accuracy"] for _, s in group], seeds)
        # FLOPs ratio: the pruned model's non-zero FLOPs over the unpruned model's dense FLOPs.
        expected = [s["flops_nonzero"] / s["stages"]["pretrained"]["flops_dense"] for _, s in group]
        check_cell(f"heads={heads} FLOPs ratio", rows[(f"heads={heads}", "sst2", "flops_ratio")], expected, seeds)
        ratios[heads] = expected[0]
        check(f"row heads={heads} in the Markdown with its ratio",
              re.search(rf"^\| heads={heads} \| \d\.\d{{3}} ± \d\.\d{{3}} \(2\) \| {expected[0]:.3f} \|$", markdown,
                        re.M) is not None, markdown)
    check("removing more heads leaves fewer FLOPs", 0 < ratios[2] < ratios[1] < 1, f"{ratios}")
    table = json.loads(report(dsee, f"{sweeps}/runs/table6", "--table", "6", "--format", "json"))
    check_equal("JSON row keys", table["row_keys"], ["prune.heads_per_layer"])
    check_equal("JSON rows", [r["label"] for r in table["rows"]], ["heads=1", "heads=2"])


def test_missing_and_failed_runs_are_shown(sweeps, dsee):
    copy = f"{sweeps}/partial/table6"
    shutil.copytree(f"{sweeps}/runs/table6", copy)
    names = sorted(n for n in os.listdir(copy) if os.path.isdir(f"{copy}/{n}"))
    failed = next(n for n in names if "heads_per_layer=1" in n and n.endswith("seed=2"))
    missing = next(n for n in names if "heads_per_layer=2" in n and n.endswith("seed=1"))
    os.remove(f"{copy}/{failed}/summary.json")
    shutil.rmtree(f"{copy}/{missing}")
    markdown = report(dsee, copy, "--table", "6")
    print(markdown)
    check("heads=1: one of two finished, one failed",
          re.search(r"^\| heads=1 \| \d\.\d{3} \(1 of 2; 1 failed\) \|", markdown, re.M) is not None, markdown)
    check("heads=2: one of two finished, one missing",
          re.search(r"^\| heads=2 \| \d\.\d{3} \(1 of 2; 1 missing\) \|", markdown, re.M) is not None, markdown)
    check("the footer lists the failed run", f"- failed: {failed} (" in markdown, markdown)
    check("the footer lists the missing run", f"- missing: {missing} (listed in sweep.tsv, not started)" in markdown,
          markdown)
    rows = csv_rows(report(dsee, copy, "--table", "6", "--format", "csv"))
    one, two = rows[("heads=1", "sst2", "accuracy")], rows[("heads=2", "sst2", "accuracy")]
    check_equal("CSV heads=1: n, expected, missing, failed", [one[k] for k in ("n", "expected", "missing", "failed")],
                ["1", "2", "0", "1"])
    check_equal("CSV heads=2: n, expected, missing, failed", [two[k] for k in ("n", "expected", "missing", "failed")],
                ["1", "2", "1", "0"])
    check_equal("CSV heads=1: std of one run is 0", one["std"], "0")


def check_png(path, size):
    from PIL import Image
    with Image.open(path) as image:
        check_equal(f"{os.path.basename(path)}: pixel size", image.size, size)
        extrema = image.convert("L").getextrema()
        check(f"{os.path.basename(path)}: not one flat colour", extrema[0] < extrema[1], f"{extrema}")


def test_plots(sweeps, dsee):
    out = f"{sweeps}/plots"
    printed = report(dsee, f"{sweeps}/runs/table1", f"{sweeps}/runs/table6", "--table", "6", "--plot", "--out", out)
    check("the table is printed before the plots", printed.startswith("## Table 6"), printed[:80])
    check_png(f"{out}/table-6-vs-heads_per_layer.png", (400, 320))
    check_png(f"{out}/table-6-vs-trainable.png", (400, 320))
    curves = sorted(os.listdir(f"{out}/curves"))
    check_equal("one curves PNG per run of both sweeps", len(curves), 12)
    for name in curves:
        check_png(f"{out}/curves/{name}", (800, 320))
    check("the plot data beside them", os.path.exists(f"{out}/table-6-plot.json"))
    report(dsee, f"{sweeps}/runs/table1", "--table", "1", "--plot")
    check_png(f"{sweeps}/runs/table1/table-1-vs-trainable.png", (400, 320))

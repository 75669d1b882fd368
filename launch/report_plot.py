"""dsee report --table ... --plot: the table's figures and each run's curves
as PNG files, drawn with matplotlib (Agg) from the table's JSON
(`dsee report --format json`, written beside the plots as
table-<name>-plot.json).

Files, in --out (sizes at 100 dpi, for tests and documents that embed them):
  table-<name>-vs-<x>.png          metric (mean ± std over seeds) against the
                                   spec's plot_x (a sparsity level, c, heads
                                   removed), one line per other setting, one
                                   panel per column: 400·columns × 320 pixels
  table-<name>-vs-trainable.png    metric against the trainable parameters,
                                   one point per row, one panel per column:
                                   400·columns × 320 pixels
  curves/<run>.png                 the run's training loss and dev metric
                                   against the optimizer step (re-tuning
                                   continues the axis after a dashed line),
                                   from its metrics.jsonl: 800 × 320 pixels
Prints each file it writes. Exit status 3 when matplotlib is missing.
"""
import argparse
import json
import os
import re
import sys

PANEL_INCHES = (4.0, 3.2)
CURVES_INCHES = (8.0, 3.2)
DPI = 100


def load_pyplot():
    try:
        import matplotlib
    except ImportError:
        sys.stderr.write(f"report_plot.py: matplotlib is not installed in {sys.executable}; install the project's "
                         "pinned version (pip install -r requirements.txt, or launch/setup)\n")
        sys.exit(3)
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def file_part(text):
    return re.sub(r"[^A-Za-z0-9.+=-]+", "_", text).strip("_") or "run"


def cells_of(table, quantity_of_column):
    """{(row label, column): cell} for each column's quantity, plus the trainable counts."""
    out = {}
    for row in table["rows"]:
        for cell in row["cells"]:
            if cell["quantity"] in (quantity_of_column.get(cell["column"]), "trainable_parameters"):
                out[(row["label"], cell["column"], cell["quantity"])] = cell
    return out


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return None


def panels(plt, columns):
    figure, axes = plt.subplots(1, len(columns), figsize=(PANEL_INCHES[0] * len(columns), PANEL_INCHES[1]),
                                dpi=DPI, squeeze=False)
    return figure, axes[0]


def save(figure, path, written):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    figure.savefig(path, dpi=DPI)
    written.append(path)


def plot_against_key(plt, table, metric_of, cells, out, written):
    """Metric against the spec's plot_x: one line per combination of the other row keys."""
    key = table["plot_x"]
    columns = table["columns"]
    figure, axes = panels(plt, columns)
    for ax, column in zip(axes, columns):
        series = {}
        for row in table["rows"]:
            x = number(row["keys"].get(key))
            cell = cells.get((row["label"], column, metric_of[column]))
            if x is None or cell is None or cell["mean"] is None:
                continue
            others = " ".join(f"{k.split('.')[-1]}={v}" for k, v in row["keys"].items() if k != key) or "runs"
            series.setdefault(others, []).append((x, cell["mean"], cell["std"] or 0.0))
        for label, points in series.items():
            points.sort()
            ax.errorbar([p[0] for p in points], [p[1] for p in points], yerr=[p[2] for p in points], marker="o",
                        capsize=3, label=label)
        ax.set_title(column)
        ax.set_xlabel(key)
        ax.set_ylabel(metric_of[column])
        if series:
            ax.legend(fontsize="small")
    figure.tight_layout()
    save(figure, os.path.join(out, f"table-{table['name']}-vs-{file_part(key.split('.')[-1])}.png"), written)
    plt.close(figure)


def plot_against_trainable(plt, table, metric_of, cells, out, written):
    columns = table["columns"]
    figure, axes = panels(plt, columns)
    for ax, column in zip(axes, columns):
        for row in table["rows"]:
            metric = cells.get((row["label"], column, metric_of[column]))
            trainable = cells.get((row["label"], column, "trainable_parameters"))
            if not metric or not trainable or metric["mean"] is None or trainable["mean"] is None:
                continue
            ax.errorbar([trainable["mean"]], [metric["mean"]], yerr=[metric["std"] or 0.0], marker="o", capsize=3,
                        label=row["label"])
        ax.set_title(column)
        ax.set_xlabel("trainable parameters")
        ax.set_ylabel(metric_of[column])
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize="small")
    figure.tight_layout()
    save(figure, os.path.join(out, f"table-{table['name']}-vs-trainable.png"), written)
    plt.close(figure)


def read_metrics(path):
    records = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            line = line.strip()
            if line:
                records.append(json.loads(line))
    return records


def plot_curves(plt, table, metric_of, out, written):
    for run in table["runs"]:
        path = os.path.join(run["dir"], "metrics.jsonl")
        if not os.path.exists(path):
            continue
        metric = metric_of.get(run["column"])
        train_x, train_y, eval_x, eval_y, stage_starts = [], [], [], [], []
        offset, last_step = 0, 0
        for record in read_metrics(path):
            step = record.get("step", 0)
            if step < last_step:  # re-tuning counts its steps from the start again
                offset += last_step
                stage_starts.append(offset)
            last_step = step
            if record.get("kind") == "train" and isinstance(record.get("loss"), (int, float)):
                train_x.append(step + offset)
                train_y.append(record["loss"])
            if record.get("kind") == "eval" and isinstance(record.get(metric), (int, float)):
                eval_x.append(step + offset)
                eval_y.append(record[metric])
        figure, (loss_ax, metric_ax) = plt.subplots(1, 2, figsize=CURVES_INCHES, dpi=DPI)
        loss_ax.plot(train_x, train_y)
        loss_ax.set_title(f"{run['run']}: training loss", fontsize="small")
        loss_ax.set_xlabel("step")
        metric_ax.plot(eval_x, eval_y, marker="o")
        metric_ax.set_title(f"dev {metric}", fontsize="small")
        metric_ax.set_xlabel("step")
        for ax in (loss_ax, metric_ax):
            for start in stage_starts:
                ax.axvline(start, linestyle="--", color="grey")
        figure.tight_layout()
        save(figure, os.path.join(out, "curves", file_part(run["run"]) + ".png"), written)
        plt.close(figure)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="the table's JSON (dsee report --format json)")
    parser.add_argument("--out", required=True, help="the folder for the PNG files")
    args = parser.parse_args()
    plt = load_pyplot()
    with open(args.data, encoding="utf-8") as f:
        table = json.load(f)
    # Each column's first metric is the one plotted (the main metric, or the first the spec lists).
    metric_of = {column: (names[0] if names else None) for column, names in table["metrics"].items()}
    cells = cells_of(table, metric_of)
    written = []
    if table.get("plot_x"):
        plot_against_key(plt, table, metric_of, cells, args.out, written)
    plot_against_trainable(plt, table, metric_of, cells, args.out, written)
    plot_curves(plt, table, metric_of, args.out, written)
    for path in written:
        print(path)


if __name__ == "__main__":
    main()

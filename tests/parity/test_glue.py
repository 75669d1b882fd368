"""Parity: dsee's GLUE readers and encoding (data/glue.h) against transformers.

Writes a few TSV lines per GLUE task in the distribution's column layouts
(CoLA without header, MRPC with a byte-order mark, MNLI's matched and
mismatched dev files) with tricky fields: literal quote characters, accents,
CJK and emoji, an empty second sentence, sentences long enough to be
truncated. Trains a WordPiece and a byte-level BPE vocabulary on them with
`tokenizers`, and requires glue_driver's tensors to equal, exactly,
  - ids, attention mask and token type ids of BertTokenizerFast /
    RobertaTokenizerFast called as tokenizer(a, b, truncation="longest_first",
    max_length=L, padding="longest") (and padding="max_length");
  - labels read by Python's csv module (tab, no quoting) and numbered as
    transformers' GLUE processors numbered them (MNLI contradiction,
    entailment, neutral; QNLI/RTE entailment, not_entailment), STS-B floats.
Then, given the dsee binary: `dsee run` on tiny SST-2 and STS-B folders with
a tiny random BERT (transformers, saved with the trained vocabulary) for one
epoch; stages/eval.json must hold the task's metrics and they must equal
scikit-learn / scipy on the exported dev predictions.

usage: test_glue.py GLUE_DRIVER [DSEE_BINARY]      exits 1 on any mismatch
"""
import csv
import json
import os
import random
import subprocess
import sys
import tempfile

DRIVER = sys.argv[1]
DSEE = sys.argv[2] if len(sys.argv) > 2 else None

WORDS = ("the quick brown fox jumps over a lazy dog \"quoted\" 'single' it's naïve café résumé Ångström "
         "日本語 漢字 😀 👍🏽 don't 12,345.67 $100 50% a+b=c <tag> [x] — … « » “double” Straße İstanbul "
         "movie film great terrible plot actors").split(" ")

# Column layouts of the distribution (header names; CoLA has none).
HEADERS = {
    "sst2": ["sentence", "label"],
    "mrpc": ["Quality", "#1 ID", "#2 ID", "#1 String", "#2 String"],
    "qqp": ["id", "qid1", "qid2", "question1", "question2", "is_duplicate"],
    "stsb": ["index", "genre", "filename", "year", "old_index", "source1", "source2", "sentence1", "sentence2",
             "score"],
    "mnli": ["index", "promptID", "pairID", "genre", "sentence1_binary_parse", "sentence2_binary_parse",
             "sentence1_parse", "sentence2_parse", "sentence1", "sentence2", "label1", "gold_label"],
    "qnli": ["index", "question", "sentence", "label"],
    "rte": ["index", "sentence1", "sentence2", "label"],
    "wnli": ["index", "sentence1", "sentence2", "label"],
}
# (first, second, label) columns, and the label lists of transformers' GLUE processors.
COLUMNS = {"sst2": ("sentence", None, "label"), "mrpc": ("#1 String", "#2 String", "Quality"),
           "qqp": ("question1", "question2", "is_duplicate"), "stsb": ("sentence1", "sentence2", "score"),
           "mnli": ("sentence1", "sentence2", "gold_label"), "qnli": ("question", "sentence", "label"),
           "rte": ("sentence1", "sentence2", "label"), "wnli": ("sentence1", "sentence2", "label")}
LABELS = {"cola": ["0", "1"], "sst2": ["0", "1"], "mrpc": ["0", "1"], "qqp": ["0", "1"], "stsb": None,
          "mnli": ["contradiction", "entailment", "neutral"], "qnli": ["entailment", "not_entailment"],
          "rte": ["entailment", "not_entailment"], "wnli": ["0", "1"]}
PAIR = {t: t not in ("cola", "sst2") for t in LABELS}
MAX_LEN = 24


def sentence(rng, long=False):
    n = rng.randint(25, 40) if long else rng.randint(1, 10)
    return " ".join(rng.choice(WORDS) for _ in range(n)).strip() or "x"


def task_rows(task, rng, n):
    """n rows of `task` as lists of fields, with a label column value."""
    rows = []
    for i in range(n):
        a = sentence(rng, long=i % 5 == 3)
        b = "" if (PAIR[task] and i == 2 and task in ("qqp", "mnli")) else sentence(rng, long=i % 4 == 1)
        label = f"{rng.uniform(0, 5):.3f}" if task == "stsb" else rng.choice(LABELS[task])
        if task == "cola":
            rows.append([f"gj0{i % 9}", label, "*" if label == "0" else "", a])
            continue
        values = {h: str(i) for h in HEADERS[task]}
        first, second, lab = COLUMNS[task]
        values[first] = a
        if second:
            values[second] = b
        values[lab] = label
        if task == "mnli":
            values["sentence1_parse"] = "( ( " + a + " ) )"
            values["label1"] = label
        rows.append([values[h] for h in HEADERS[task]])
    return rows


def write_task(folder, task, rng, n_train=12, n_dev=9):
    os.makedirs(folder, exist_ok=True)
    dev_files = ["dev_matched.tsv", "dev_mismatched.tsv"] if task == "mnli" else ["dev.tsv"]
    for name, n in [("train.tsv", n_train)] + [(f, n_dev) for f in dev_files]:
        with open(f"{folder}/{name}", "w", encoding="utf-8", newline="") as f:
            if task != "cola":
                f.write(("\ufeff" if task == "mrpc" else "") + "\t".join(HEADERS[task]) + "\n")
            for row in task_rows(task, rng, n):
                f.write("\t".join(row) + ("\r\n" if task == "rte" else "\n"))
    return dev_files


def python_read(task, path):
    """(firsts, seconds or None, labels) as the GLUE processors read the file."""
    with open(path, encoding="utf-8-sig", newline="") as f:
        lines = [l for l in csv.reader(f, delimiter="\t", quotechar=None) if l]
    if task == "cola":
        firsts, seconds, labels = [l[3] for l in lines], None, [l[1] for l in lines]
    else:
        header, lines = lines[0], lines[1:]
        first, second, lab = (header.index(c) if c else None for c in COLUMNS[task])
        firsts = [l[first] for l in lines]
        seconds = [l[second] for l in lines] if second is not None else None
        labels = [l[lab] for l in lines]
    labels = [float(x) for x in labels] if task == "stsb" else [LABELS[task].index(x) for x in labels]
    return firsts, seconds, labels


def driver(task, path, tokenizer_dir, max_len, pad_to_max=False):
    args = [DRIVER, task, path, tokenizer_dir, str(max_len)] + (["--pad-to-max-length"] if pad_to_max else [])
    r = subprocess.run(args, capture_output=True, text=True)
    if r.returncode != 0:
        sys.exit(f"glue_driver {task} {path} failed: {r.stderr}")
    return json.loads(r.stdout)


def train_tokenizers(work, corpus):
    from tokenizers import BertWordPieceTokenizer, ByteLevelBPETokenizer
    with open(f"{work}/corpus.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(corpus))
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train([f"{work}/corpus.txt"], vocab_size=400, min_frequency=1, limit_alphabet=300)
    bpe = ByteLevelBPETokenizer()
    bpe.train([f"{work}/corpus.txt"], vocab_size=400, min_frequency=1,
              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    folders = {"bert": f"{work}/bert", "roberta": f"{work}/roberta"}
    for name, tok in (("bert", wp), ("roberta", bpe)):
        os.makedirs(folders[name], exist_ok=True)
        tok.save_model(folders[name])
    with open(f"{folders['bert']}/tokenizer_config.json", "w") as f:
        json.dump({"do_lower_case": True}, f)
    with open(f"{folders['roberta']}/tokenizer_config.json", "w") as f:
        json.dump({"tokenizer_class": "RobertaTokenizer"}, f)
    return folders


def compare_encoding(label, hf, firsts, seconds, labels, got, max_len, padding):
    if seconds is None:
        enc = hf(firsts, truncation="longest_first", max_length=max_len, padding=padding)
    else:
        enc = hf(firsts, seconds, truncation="longest_first", max_length=max_len, padding=padding)
    bad = 0
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in got else [])
    for key in keys:
        if enc[key] != got[key]:
            bad += 1
            print(f"FAIL {label} {key}:\n  hf   {enc[key]}\n  dsee {got[key]}")
    if "token_type_ids" in enc and "token_type_ids" not in got and any(any(r) for r in enc["token_type_ids"]):
        bad += 1
        print(f"FAIL {label}: dsee has no token_type_ids, transformers' are not all 0")
    want_dtype = "float32" if isinstance(labels[0], float) else "int64"
    close = all(abs(a - b) <= 1e-6 * max(1.0, abs(a)) for a, b in zip(labels, got["labels"]))
    if len(labels) != len(got["labels"]) or not close or got["labels_dtype"] != want_dtype:
        bad += 1
        print(f"FAIL {label} labels ({got['labels_dtype']}, want {want_dtype}):\n  py   {labels}\n  dsee "
              f"{got['labels']}")
    longest = max(len(r) for r in got["input_ids"])
    print(f"{label}: {len(labels)} rows, {longest} columns, {'OK' if not bad else 'FAIL'}")
    return bad


def check_encodings(work):
    from transformers import BertTokenizerFast, RobertaTokenizerFast
    rng = random.Random(6)
    data = f"{work}/glue"
    files = {}
    for task in LABELS:
        files[task] = ["train.tsv"] + write_task(f"{data}/{task}", task, rng)
    corpus = []
    for task in LABELS:
        for name in files[task]:
            firsts, seconds, _ = python_read(task, f"{data}/{task}/{name}")
            corpus += firsts + (seconds or [])
    folders = train_tokenizers(work, corpus)
    hfs = {"bert": BertTokenizerFast.from_pretrained(folders["bert"]),
           "roberta": RobertaTokenizerFast.from_pretrained(folders["roberta"])}
    failures = 0
    truncated = 0
    for task in LABELS:
        for name in files[task]:
            path = f"{data}/{task}/{name}"
            firsts, seconds, labels = python_read(task, path)
            for tok, hf in hfs.items():
                got = driver(task, path, folders[tok], MAX_LEN)
                failures += compare_encoding(f"{task}/{name} {tok}", hf, firsts, seconds, labels, got, MAX_LEN,
                                             "longest")
                truncated += sum(1 for r in got["attention_mask"] if sum(r) == MAX_LEN)
        got = driver(task, f"{data}/{task}/train.tsv", folders["bert"], 32, pad_to_max=True)
        firsts, seconds, labels = python_read(task, f"{data}/{task}/train.tsv")
        failures += compare_encoding(f"{task}/train.tsv bert padded to 32", hfs["bert"], firsts, seconds, labels,
                                     got, 32, "max_length")
    if truncated == 0:
        print("FAIL: no row reached max_length; the truncation path was not exercised")
        failures += 1
    print(f"rows truncated to {MAX_LEN}: {truncated}")
    return failures, folders


def tiny_bert(folder, vocab_dir, vocab_size):
    import torch
    from transformers import BertConfig, BertModel
    torch.manual_seed(0)
    config = BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=48, max_position_embeddings=64)
    BertModel(config).save_pretrained(folder, safe_serialization=True)
    for f in os.listdir(vocab_dir):
        with open(f"{vocab_dir}/{f}", "rb") as src, open(f"{folder}/{f}", "wb") as dst:
            dst.write(src.read())


def check_runs(work, folders):
    from safetensors.numpy import load_file
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score
    with open(f"{folders['bert']}/vocab.txt", encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    model = f"{work}/tiny-bert"
    tiny_bert(model, folders["bert"], vocab_size)
    rng = random.Random(11)
    failures = 0
    for task, metrics in (("sst2", ["accuracy"]), ("stsb", ["pearson", "spearman"])):
        folder = f"{work}/run-data/{task}"
        write_task(folder, task, rng, n_train=40, n_dev=24)
        recipe = f"{work}/{task}.toml"
        with open(recipe, "w") as f:
            f.write(f'[run]\nname = "{task}"\nout_dir = "{work}/runs"\nseed = 1\n\n[model]\npath = "{model}"\n\n'
                    f'[task]\nname = "{task}"\ndata_dir = "{folder}"\nmax_seq_length = 32\n\n'
                    '[tuning]\nmethod = "dsee"\nrank = 4\nalpha = 8.0\n\n[omega]\nc = 4\n\n'
                    '[train]\nlr = 1e-3\nepochs = 1\nbatch_size = 8\n')
        r = subprocess.run([DSEE, "run", recipe], capture_output=True, text=True)
        if r.returncode != 0:
            print(f"FAIL dsee run {task} ({r.returncode}):\n{r.stdout}\n{r.stderr}")
            failures += 1
            continue
        with open(f"{work}/runs/{task}/stages/eval.json") as f:
            dev = json.load(f)["dev"]
        if sorted(dev) != sorted(metrics):
            print(f"FAIL {task}: eval.json dev metrics {sorted(dev)}, expected {sorted(metrics)}")
            failures += 1
            continue
        saved = load_file(f"{work}/runs/{task}/predictions-dev.safetensors")
        logits, labels = saved["dev.logits"], saved["dev.labels"]
        _, _, py_labels = python_read(task, f"{folder}/dev.tsv")
        if list(labels) != [type(labels[0].item())(x) for x in py_labels] and task == "sst2":
            print(f"FAIL {task}: exported labels differ from the file's")
            failures += 1
        if task == "sst2":
            reference = {"accuracy": accuracy_score(labels, logits.argmax(1))}
        else:
            p = logits[:, 0].astype("float64")
            y = labels.astype("float64")
            reference = {"pearson": pearsonr(p, y).statistic, "spearman": spearmanr(p, y).statistic}
        for m in metrics:
            ok = abs(dev[m] - reference[m]) <= 1e-5 * max(1.0, abs(reference[m]))
            in_range = 0.0 <= dev[m] <= 1.0 if m == "accuracy" else -1.0 <= dev[m] <= 1.0
            print(f"dsee run {task}: {m} {dev[m]:.6f}, reference {reference[m]:.6f} {'OK' if ok and in_range else 'FAIL'}")
            failures += 0 if ok and in_range else 1
    return failures


def main():
    with tempfile.TemporaryDirectory() as work:
        failures, folders = check_encodings(work)
        if DSEE:
            failures += check_runs(work, folders)
    print("PASS" if failures == 0 else f"FAIL: {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

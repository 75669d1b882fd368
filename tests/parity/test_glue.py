"""Parity: dsee's GLUE readers and encoding (data/glue.h) against transformers.

Writes a few TSV lines per GLUE task in the distribution's column layouts
(CoLA without header, MRPC with a byte-order mark, MNLI's matched and
mismatched dev files) with tricky fields: literal quote characters, accents,
CJK and emoji, an empty second sentence, sentences long enough to be
truncated. Trains a WordPiece and a byte-level BPE vocabulary on them with
`tokenizers`, and requires dsee_parity's glue-encode tensors to equal, exactly,
  - ids, attention mask and token type ids of BertTokenizerFast /
    RobertaTokenizerFast called as tokenizer(a, b, truncation="longest_first",
    max_length=L, padding="longest") (and padding="max_length");
  - labels read by Python's csv module (tab, no quoting) and numbered as
    transformers' GLUE processors numbered them (MNLI contradiction,
    entailment, neutral; QNLI/RTE entailment, not_entailment), STS-B floats.
Then `dsee run` on tiny SST-2 and STS-B folders with a tiny random BERT
(transformers, saved with the trained vocabulary) for one epoch;
stages/eval.json must hold the task's metrics and they must equal
scikit-learn / scipy on the exported dev predictions.
"""
import csv
import json
import os
import random
import subprocess

import pytest

from harness import check, check_close, check_equal
from harness.models import byte_level_bpe_vocabulary, copy_files, tiny_bert_for_vocabulary, wordpiece_vocabulary

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


def compare_encoding(label, hf, firsts, seconds, labels, got, max_len, padding):
    """glue-encode's tensors equal transformers' encoding and the labels Python read."""
    if seconds is None:
        enc = hf(firsts, truncation="longest_first", max_length=max_len, padding=padding)
    else:
        enc = hf(firsts, seconds, truncation="longest_first", max_length=max_len, padding=padding)
    keys = ["input_ids", "attention_mask"] + (["token_type_ids"] if "token_type_ids" in got else [])
    for key in keys:
        check_equal(f"{label} {key}", got[key], enc[key])
    if "token_type_ids" in enc and "token_type_ids" not in got:
        check(f"{label}: dsee has no token_type_ids, transformers' are all 0",
              not any(any(r) for r in enc["token_type_ids"]))
    check_equal(f"{label} labels dtype", got["labels_dtype"], "float32" if isinstance(labels[0], float) else "int64")
    check_close(f"{label} labels ({len(labels)} rows, {max(len(r) for r in got['input_ids'])} columns)",
                got["labels"], labels, rel_each=1e-6, floor=1.0, reference="python")


def glue_encode(parity, task, path, tokenizer_dir, max_len, pad_to_max=False):
    """dsee's encoding of a GLUE file, as lists of rows (and the labels' dtype)."""
    out = parity("glue-encode", {"task": task, "file": path, "tokenizer": tokenizer_dir, "max_seq_length": max_len,
                                 "pad_to_max_length": pad_to_max}, out=True).tensors
    got = {key: tensor.tolist() for key, tensor in out.items()}
    got["labels_dtype"] = str(out["labels"].dtype).replace("torch.", "")
    return got


def train_tokenizers(work, corpus):
    with open(f"{work}/corpus.txt", "w", encoding="utf-8") as f:
        f.write("\n".join(corpus))
    folders = {"bert": f"{work}/bert", "roberta": f"{work}/roberta"}
    wordpiece_vocabulary(f"{work}/corpus.txt", folders["bert"], vocab_size=400, min_frequency=1, limit_alphabet=300)
    byte_level_bpe_vocabulary(f"{work}/corpus.txt", folders["roberta"], vocab_size=400, min_frequency=1,
                              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
    with open(f"{folders['bert']}/tokenizer_config.json", "w") as f:
        json.dump({"do_lower_case": True}, f)
    with open(f"{folders['roberta']}/tokenizer_config.json", "w") as f:
        json.dump({"tokenizer_class": "RobertaTokenizer"}, f)
    return folders


@pytest.fixture(scope="module")
def glue(tmp_path_factory):
    """(the data folder, {task: its files}, the trained tokenizer folders, the work folder)."""
    work = str(tmp_path_factory.mktemp("glue"))
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
    return data, files, train_tokenizers(work, corpus), work


def test_glue_encoding_matches_transformers(glue, parity):
    from transformers import BertTokenizerFast, RobertaTokenizerFast
    data, files, folders, _ = glue
    hfs = {"bert": BertTokenizerFast.from_pretrained(folders["bert"]),
           "roberta": RobertaTokenizerFast.from_pretrained(folders["roberta"])}
    truncated = 0
    for task in LABELS:
        for name in files[task]:
            path = f"{data}/{task}/{name}"
            firsts, seconds, labels = python_read(task, path)
            for tok, hf in hfs.items():
                got = glue_encode(parity, task, path, folders[tok], MAX_LEN)
                compare_encoding(f"{task}/{name} {tok}", hf, firsts, seconds, labels, got, MAX_LEN, "longest")
                truncated += sum(1 for r in got["attention_mask"] if sum(r) == MAX_LEN)
        got = glue_encode(parity, task, f"{data}/{task}/train.tsv", folders["bert"], 32, pad_to_max=True)
        firsts, seconds, labels = python_read(task, f"{data}/{task}/train.tsv")
        compare_encoding(f"{task}/train.tsv bert padded to 32", hfs["bert"], firsts, seconds, labels, got, 32,
                         "max_length")
    check(f"rows truncated to {MAX_LEN}: the truncation path was exercised", truncated > 0, f"{truncated}")


def test_dsee_run_metrics_match_scikit_learn_and_scipy(glue, dsee):
    from safetensors.numpy import load_file
    from scipy.stats import pearsonr, spearmanr
    from sklearn.metrics import accuracy_score
    _, _, folders, work = glue
    model = f"{work}/tiny-bert"
    copy_files(folders["bert"], model)
    tiny_bert_for_vocabulary(model)
    rng = random.Random(11)
    for task, metrics in (("sst2", ["accuracy"]), ("stsb", ["pearson", "spearman"])):
        folder = f"{work}/run-data/{task}"
        write_task(folder, task, rng, n_train=40, n_dev=24)
        recipe = f"{work}/{task}.toml"
        with open(recipe, "w") as f:
            f.write(f'[run]\nname = "{task}"\nout_dir = "{work}/runs"\nseed = 1\n\n[model]\npath = "{model}"\n\n'
                    f'[task]\nname = "{task}"\ndata_dir = "{folder}"\nmax_seq_length = 32\n\n'
                    '[tuning]\nmethod = "dsee"\nrank = 4\nalpha = 8.0\n\n[omega]\nc = 4\n\n'
                    '[train]\nlr = 1e-3\nepochs = 1\nbatch_size = 8\n')
        r = subprocess.run([dsee, "run", recipe], capture_output=True, text=True)
        check(f"dsee run {task} exits 0", r.returncode == 0, f"{r.returncode}:\n{r.stdout}\n{r.stderr}")
        with open(f"{work}/runs/{task}/stages/eval.json") as f:
            dev = json.load(f)["dev"]
        check_equal(f"{task}: eval.json dev metrics", sorted(dev), sorted(metrics))
        saved = load_file(f"{work}/runs/{task}/predictions-dev.safetensors")
        logits, labels = saved["dev.logits"], saved["dev.labels"]
        _, _, py_labels = python_read(task, f"{folder}/dev.tsv")
        if task == "sst2":
            check_equal(f"{task}: exported labels = the file's", list(labels),
                        [type(labels[0].item())(x) for x in py_labels])
            reference = {"accuracy": accuracy_score(labels, logits.argmax(1))}
        else:
            p = logits[:, 0].astype("float64")
            y = labels.astype("float64")
            reference = {"pearson": pearsonr(p, y).statistic, "spearman": spearmanr(p, y).statistic}
        for m in metrics:
            low = 0.0 if m == "accuracy" else -1.0
            check(f"dsee run {task}: {m} {dev[m]:.6f} in [{low:g}, 1]", low <= dev[m] <= 1.0)
            check_close(f"dsee run {task}: {m} vs the reference's {reference[m]:.6f}", dev[m], reference[m],
                        rel_each=1e-5, floor=1.0)

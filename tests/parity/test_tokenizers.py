"""Parity: dsee's tokenizers against the Hugging Face ones, id for id.

Writes a corpus of hard lines (bench/tokenizer_corpus.py: every pre-tokenizer
rule), trains a WordPiece and a byte-level BPE vocabulary on it with the
`tokenizers` library, saves them as split files (vocab.txt; vocab.json +
merges.txt) and as tokenizer.json, and compares `dsee tokenize` with
BertTokenizerFast (uncased and cased), RobertaTokenizerFast
(add_prefix_space) and GPT2TokenizerFast: singles, pairs truncated
longest_first and only_second, padding to max length. Then: GPT-2
decode(encode(line)) == line for every line, and invalid UTF-8 input is
encoded as its U+FFFD repair with one warning naming the line.
"""
import json
import os
import random
import subprocess

import pytest
from transformers import BertTokenizerFast, GPT2TokenizerFast, RobertaTokenizerFast

import tokenizer_corpus
from harness import check, check_equal
from harness.models import byte_level_bpe_vocabulary, wordpiece_vocabulary

LINES = 3000


def dsee_tokenize(dsee, args, text):
    r = subprocess.run([dsee] + args, input=text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text,
                       capture_output=True)
    check(f"dsee {' '.join(args)} exits 0", r.returncode == 0, f"{r.returncode}: {r.stderr.decode()}")
    return r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    """(lines, the folder holding the trained vocabularies wp/ and bpe/)."""
    rng = random.Random(4)
    lines = [tokenizer_corpus.make_line(rng) for _ in range(LINES)]
    work = str(tmp_path_factory.mktemp("tokenizers"))
    corpus_file = f"{work}/corpus.txt"
    with open(corpus_file, "w", encoding="utf-8", newline="") as f:
        f.write("\n".join(lines * 3))
    wordpiece_vocabulary(corpus_file, f"{work}/wp", vocab_size=1500, min_frequency=2, limit_alphabet=400)
    byte_level_bpe_vocabulary(corpus_file, f"{work}/bpe", vocab_size=1200, min_frequency=2,
                              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"])
    return lines, work


# name: (how transformers loads it, the vocabulary, tokenizer_config.json)
SPECS = {
    "bert-uncased": (lambda d: BertTokenizerFast.from_pretrained(d), "wp", {"do_lower_case": True}),
    "bert-cased": (lambda d: BertTokenizerFast.from_pretrained(d, do_lower_case=False), "wp",
                   {"do_lower_case": False}),
    "roberta": (lambda d: RobertaTokenizerFast.from_pretrained(d, add_prefix_space=True), "bpe",
                {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": True}),
    "gpt2": (lambda d: GPT2TokenizerFast.from_pretrained(d), "bpe", {"tokenizer_class": "GPT2Tokenizer"}),
}


def reference_tokenizer(work, name):
    """(HF tokenizer, folder with split files, folder with tokenizer.json only)."""
    make, files, config = SPECS[name]
    split = f"{work}/{name}-split"
    os.makedirs(split, exist_ok=True)
    for f in os.listdir(f"{work}/{files}"):
        with open(f"{work}/{files}/{f}", "rb") as src, open(f"{split}/{f}", "wb") as dst:
            dst.write(src.read())
    with open(f"{split}/tokenizer_config.json", "w") as f:
        json.dump(config, f)
    hf = make(split)
    packed = f"{work}/{name}-json"
    hf.save_pretrained(packed)
    for f in os.listdir(packed):
        if f != "tokenizer.json":
            os.remove(f"{packed}/{f}")
    return hf, split, packed


def compare(label, expected, got_lines, inputs):
    """dsee's JSON lines equal transformers' encodings: ids, token types and mask of every line."""
    got = [json.loads(line) for line in got_lines.splitlines()]
    check_equal(f"{label}: output lines", len(got), len(expected))
    bad = []
    for i, (e, g) in enumerate(zip(expected, got)):
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            if e[key] != g[key]:
                bad.append(f"line {i + 1} {key}: input {inputs[i]!r}\n  hf   {e[key]}\n  dsee {g[key]}")
                break
    check(f"{label}: {len(expected)} lines, {len(bad)} mismatches", not bad, "\n".join(bad[:3]))


def hf_encode(hf, first, second=None, **kw):
    enc = hf(first, second, return_token_type_ids=True, return_attention_mask=True, **kw) if second is not None else \
        hf(first, return_token_type_ids=True, return_attention_mask=True, **kw)
    return [{k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")} for i in range(len(first))]


@pytest.mark.parametrize("name", SPECS)
def test_tokenize_matches_hugging_face(name, corpus, dsee):
    lines, work = corpus
    hf, split, packed = reference_tokenizer(work, name)
    text = "".join(line + "\n" for line in lines)
    firsts, seconds = lines[0::2], lines[1::2]
    pair_text = "".join(a.replace("\t", " ") + "\t" + b + "\n" for a, b in zip(firsts, seconds))
    firsts = [a.replace("\t", " ") for a in firsts]
    singles = hf_encode(hf, lines)
    pairs = hf_encode(hf, firsts, seconds, truncation="longest_first", max_length=40)
    padded = hf_encode(hf, lines, truncation=True, max_length=24, padding="max_length") \
        if hf.pad_token is not None else None
    # only_second: the pairs whose first text leaves room for the second.
    room = [i for i, a in enumerate(firsts) if len(hf(a)["input_ids"]) < 40]
    only_second = hf_encode(hf, [firsts[i] for i in room], [seconds[i] for i in room],
                            truncation="only_second", max_length=48)
    room_text = "".join(firsts[i] + "\t" + seconds[i] + "\n" for i in room)
    for folder in (split, packed):
        tag = f"{name} ({os.path.basename(folder).split('-')[-1]})"
        compare(f"{tag} singles", singles, dsee_tokenize(dsee, ["tokenize", "--tokenizer", folder], text)[0], lines)
        compare(f"{tag} pairs longest_first 40", pairs,
                dsee_tokenize(dsee, ["tokenize", "--tokenizer", folder, "--pair", "--max-length", "40"],
                              pair_text)[0], list(zip(firsts, seconds)))
        if folder == packed:
            continue  # truncation and padding are shared code: checked once, on the split files
        compare(f"{tag} pairs only_second 48", only_second,
                dsee_tokenize(dsee, ["tokenize", "--tokenizer", folder, "--pair", "--max-length", "48",
                                     "--truncation", "only_second"], room_text)[0], room)
        if padded is not None:
            compare(f"{tag} singles padded 24", padded,
                    dsee_tokenize(dsee, ["tokenize", "--tokenizer", folder, "--max-length", "24",
                                         "--pad-to-max-length"], text)[0], lines)
    if name == "gpt2":
        ids = "".join(json.dumps(e["input_ids"]) + "\n" for e in singles)
        decoded = dsee_tokenize(dsee, ["detokenize", "--tokenizer", split], ids)[0].split("\n")[:-1]
        check_equal("gpt2 decode(encode(line)): lines", len(decoded), len(lines))
        bad = sum(d != line for d, line in zip(decoded, lines))
        check(f"gpt2 decode(encode(line)) == line: {len(lines)} lines, {bad} mismatches", bad == 0)
        hf_bad = sum(hf.decode(e["input_ids"], clean_up_tokenization_spaces=False) != d
                     for e, d in zip(singles, decoded))
        check(f"gpt2 decode: {hf_bad} lines differ from HF decode", hf_bad == 0)
    # Invalid UTF-8: encoded as its U+FFFD repair, one warning per bad line.
    raw = [b"ok \xff\xfe bytes", b"trunc \xe2\x82", b"surrogate \xed\xa0\x80 x", b"fine line",
           b"over \xf4\x90\x80\x80 long \xc0\xaf", b"mix \xe2\x28\xa1 end"]
    repaired = [r.decode("utf-8", "replace") for r in raw]
    out, err = dsee_tokenize(dsee, ["tokenize", "--tokenizer", split], b"".join(r + b"\n" for r in raw))
    compare(f"{name} invalid UTF-8", hf_encode(hf, repaired), out, repaired)
    warned = [i + 1 for i in range(len(raw)) if f"stdin line {i + 1}:" in err]
    check_equal(f"{name}: the lines warned about", warned, [1, 2, 3, 5, 6])

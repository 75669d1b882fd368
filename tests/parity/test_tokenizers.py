"""Parity: dsee's tokenizers against the Hugging Face ones, id for id.

Writes a corpus that exercises every pre-tokenizer rule (prose, accents and
combining marks, CJK, emoji and other astral characters, control characters,
tabs and runs of spaces, numbers, contractions, very long words, punctuation
of many scripts, special tokens written in the text), trains a WordPiece and
a byte-level BPE vocabulary on it with the `tokenizers` library, saves them
as split files (vocab.txt; vocab.json + merges.txt) and as tokenizer.json,
and compares `dsee tokenize` with BertTokenizerFast (uncased and cased),
RobertaTokenizerFast (add_prefix_space) and GPT2TokenizerFast: singles,
pairs truncated longest_first and only_second, padding to max length.
Then: GPT-2 decode(encode(line)) == line for every line, and invalid UTF-8
input is encoded as its U+FFFD repair with one warning naming the line.

usage: test_tokenizers.py DSEE_BINARY      exits 1 on any mismatch
"""
import json
import os
import random
import subprocess
import sys
import tempfile

from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer
from transformers import BertTokenizerFast, GPT2TokenizerFast, RobertaTokenizerFast

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "bench"))
from tokenizer_corpus import make_line  # noqa: E402

DSEE = sys.argv[1]
LINES = 3000

def dsee(args, text):
    r = subprocess.run([DSEE] + args, input=text.encode("utf-8", "surrogatepass") if isinstance(text, str) else text,
                       capture_output=True)
    if r.returncode != 0:
        sys.exit(f"dsee {' '.join(args)} failed ({r.returncode}): {r.stderr.decode()}")
    return r.stdout.decode("utf-8"), r.stderr.decode("utf-8")


def train(work, corpus_file):
    wp = BertWordPieceTokenizer(lowercase=True)
    wp.train([corpus_file], vocab_size=1500, min_frequency=2, limit_alphabet=400)
    bpe = ByteLevelBPETokenizer()
    bpe.train([corpus_file], vocab_size=1200, min_frequency=2,
              special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>", "<|endoftext|>"])
    os.makedirs(f"{work}/wp", exist_ok=True)
    os.makedirs(f"{work}/bpe", exist_ok=True)
    wp.save_model(f"{work}/wp")
    bpe.save_model(f"{work}/bpe")


def reference_tokenizers(work):
    """(name, HF tokenizer, folder with split files, folder with tokenizer.json only)."""
    out = []
    specs = [
        ("bert-uncased", lambda d: BertTokenizerFast.from_pretrained(d), "wp", {"do_lower_case": True}),
        ("bert-cased", lambda d: BertTokenizerFast.from_pretrained(d, do_lower_case=False), "wp",
         {"do_lower_case": False}),
        ("roberta", lambda d: RobertaTokenizerFast.from_pretrained(d, add_prefix_space=True), "bpe",
         {"tokenizer_class": "RobertaTokenizer", "add_prefix_space": True}),
        ("gpt2", lambda d: GPT2TokenizerFast.from_pretrained(d), "bpe", {"tokenizer_class": "GPT2Tokenizer"}),
    ]
    for name, make, files, config in specs:
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
        out.append((name, hf, split, packed))
    return out


def compare(label, expected, got_lines, inputs):
    got = [json.loads(l) for l in got_lines.splitlines()]
    if len(got) != len(expected):
        print(f"FAIL {label}: {len(got)} output lines for {len(expected)} inputs")
        return 1
    bad = 0
    for i, (e, g) in enumerate(zip(expected, got)):
        for key in ("input_ids", "token_type_ids", "attention_mask"):
            if e[key] != g[key]:
                bad += 1
                if bad <= 3:
                    print(f"FAIL {label} line {i + 1} {key}: input {inputs[i]!r}\n  hf   {e[key]}\n  dsee {g[key]}")
                break
    print(f"{label}: {len(expected)} lines, {bad} mismatches")
    return bad


def hf_encode(hf, first, second=None, **kw):
    enc = hf(first, second, return_token_type_ids=True, return_attention_mask=True, **kw) if second is not None else \
        hf(first, return_token_type_ids=True, return_attention_mask=True, **kw)
    return [{k: enc[k][i] for k in ("input_ids", "token_type_ids", "attention_mask")} for i in range(len(first))]


def main():
    rng = random.Random(4)
    lines = [make_line(rng) for _ in range(LINES)]
    failures = 0
    with tempfile.TemporaryDirectory() as work:
        corpus_file = f"{work}/corpus.txt"
        with open(corpus_file, "w", encoding="utf-8", newline="") as f:
            f.write("\n".join(lines * 3))
        train(work, corpus_file)
        text = "".join(l + "\n" for l in lines)
        firsts, seconds = lines[0::2], lines[1::2]
        pair_text = "".join(a.replace("\t", " ") + "\t" + b + "\n" for a, b in zip(firsts, seconds))
        firsts = [a.replace("\t", " ") for a in firsts]
        for name, hf, split, packed in reference_tokenizers(work):
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
                failures += compare(f"{tag} singles", singles, dsee(["tokenize", "--tokenizer", folder], text)[0],
                                    lines)
                failures += compare(f"{tag} pairs longest_first 40", pairs,
                                    dsee(["tokenize", "--tokenizer", folder, "--pair", "--max-length", "40"],
                                         pair_text)[0], list(zip(firsts, seconds)))
                if folder == packed:
                    continue  # truncation and padding are shared code: checked once, on the split files
                failures += compare(f"{tag} pairs only_second 48", only_second,
                                    dsee(["tokenize", "--tokenizer", folder, "--pair", "--max-length", "48",
                                          "--truncation", "only_second"], room_text)[0], room)
                if padded is not None:
                    failures += compare(f"{tag} singles padded 24", padded,
                                        dsee(["tokenize", "--tokenizer", folder, "--max-length", "24",
                                              "--pad-to-max-length"], text)[0], lines)
            if name == "gpt2":
                ids = "".join(json.dumps(e["input_ids"]) + "\n" for e in singles)
                decoded = dsee(["detokenize", "--tokenizer", split], ids)[0].split("\n")[:-1]
                bad = sum(d != l for d, l in zip(decoded, lines)) + abs(len(decoded) - len(lines))
                hf_bad = sum(hf.decode(e["input_ids"], clean_up_tokenization_spaces=False) != d
                             for e, d in zip(singles, decoded))
                print(f"gpt2 decode(encode(line)) == line: {len(lines)} lines, {bad} mismatches, "
                      f"{hf_bad} differ from HF decode")
                failures += bad + hf_bad
            # Invalid UTF-8: encoded as its U+FFFD repair, one warning per bad line.
            raw = [b"ok \xff\xfe bytes", b"trunc \xe2\x82", b"surrogate \xed\xa0\x80 x", b"fine line",
                   b"over \xf4\x90\x80\x80 long \xc0\xaf", b"mix \xe2\x28\xa1 end"]
            repaired = [r.decode("utf-8", "replace") for r in raw]
            out, err = dsee(["tokenize", "--tokenizer", split], b"".join(r + b"\n" for r in raw))
            failures += compare(f"{name} invalid UTF-8", hf_encode(hf, repaired), out, repaired)
            warned = [i + 1 for i in range(len(raw)) if f"stdin line {i + 1}:" in err]
            if warned != [1, 2, 3, 5, 6]:
                print(f"FAIL {name}: warnings for lines {warned}, expected [1, 2, 3, 5, 6]\n{err}")
                failures += 1
    print("PASS" if failures == 0 else f"FAIL: {failures} mismatches")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

"""Parity: dsee's E2E / WebNLG / DART readers and GPT-2 encoding against
Python readings of the same files and transformers' GPT-2 tokenizer.

Generates E2E-shaped records (slot-value meaning representations rendered by
a fixed grammar, one to twelve references each) and WebNLG / DART-shaped
triple sets, and writes them in every format the readers take: LoRA's
`context||completion` lines (with surrounding blanks, CRLF, blank lines and
a '||' inside a completion), the E2E challenge CSV (csv.writer's quoting of
commas, quotes and line breaks), the WebNLG JSON and XML (comments other
than "good", seen and unseen categories, entities), DART JSON (several
annotations, upper-case relations) and LoRA's jsonl. dsee_parity's nlg-read
must return exactly the (context, completion, category, seen) pairs and the
grouped items a reading with Python's json / csv / xml.etree following LoRA's
converters (examples/NLG/src/format_converting_*.py) gives.

Then a byte-level BPE vocabulary is trained on the texts with `tokenizers`
and loaded by GPT2TokenizerFast: nlg-encode's ids must equal
enc(context) + [eos] + enc(" " + completion) + [eos] cut to max_seq_length,
its labels the completion tokens (-100 on context, its eos and padding), its
prompts the last prompt_length tokens of enc(context) + [eos]. The same on a
folder whose <|endoftext|> lives only in a legacy added_tokens.json, where
`dsee tokenize` must also equal AutoTokenizer. Last, the padding length
buckets save against shuffled batches and LoRA's fixed 512 on the E2E-shaped
training file is printed.
"""
import csv
import json
import os
import random
import subprocess
import xml.etree.ElementTree as ElementTree
from xml.sax.saxutils import escape, quoteattr

import pytest
from transformers import AutoTokenizer, GPT2TokenizerFast

from harness import check, check_equal
from harness.models import byte_level_bpe_vocabulary

NAMES = ["The Eagle", "Blue Spice", "Café Rouge", "The Vaults", "Zizzi", "Loch Fyne", "Green Man", "Wildwood"]
SLOTS = {  # challenge attribute: values
    "eatType": ["pub", "coffee shop", "restaurant"],
    "food": ["Chinese", "English", "French", "Indian", "Italian", "Japanese", "Fast food"],
    "priceRange": ["cheap", "moderate", "high", "less than £20", "£20-25", "more than £30"],
    "customer rating": ["low", "average", "high", "1 out of 5", "3 out of 5", "5 out of 5"],
    "area": ["city centre", "riverside"],
    "familyFriendly": ["yes", "no"],
    "near": ["Burger King", "Café Adriatic", "The Bakers", "Crowne Plaza Hotel", "Raja Indian Cuisine"],
}
LORA_NAMES = {"eatType": "Type", "priceRange": "price", "familyFriendly": "family friendly"}
SEEN = ["Airport", "Astronaut", "Building", "City", "ComicsCharacter", "Food", "Monument", "SportsTeam",
        "University", "WrittenWork"]
UNSEEN = ["Athlete", "Artist", "CelestialBody", "MeanOfTransportation", "Politician"]


def e2e_record(rng):
    record = {"name": rng.choice(NAMES)}
    for slot in rng.sample(list(SLOTS), rng.randint(2, 7)):
        record[slot] = rng.choice(SLOTS[slot])
    return record


def render(record, rng):
    """One reference sentence for the record, from a fixed grammar."""
    parts = [f"{record['name']} is a {record.get('eatType', 'place')}"]
    if "food" in record:
        parts.append(f"serving {record['food']} food")
    if "priceRange" in record:
        parts.append(rng.choice([f"in the {record['priceRange']} price range", f"with {record['priceRange']} prices"]))
    if "area" in record:
        parts.append(f"in the {record['area']}")
    if "near" in record:
        parts.append(f"near {record['near']}")
    text = " ".join(parts) + "."
    if "customer rating" in record:
        text += f" It has a {record['customer rating']} customer rating."
    if "familyFriendly" in record:
        text += " It is " + ("" if record["familyFriendly"] == "yes" else "not ") + "family-friendly."
    if rng.random() < 0.15:
        text = text.replace(" is a ", ", \"a\" ", 1)  # commas and quotes for the CSV
    return text


def mr_of(record):
    return ", ".join(f"{k}[{v}]" for k, v in record.items())


def lora_context(record):
    return " | ".join(f"{LORA_NAMES.get(k, k)} : {v}" for k, v in record.items())


def triples_of(rng):
    subject = rng.choice(NAMES).replace(" ", "_")
    return [(subject, rng.choice(["location", "leaderName", "elevationAboveTheSeaLevel_(in_metres)", "club"]),
             rng.choice(["\"14L/32R\"", "Aarhus,_Denmark", "25.0", "Harrietstown,_New_York", "B & C <x>"]))
            for _ in range(rng.randint(1, 4))]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """The files of every format, and the E2E records they came from."""
    rng = random.Random(17)
    work = str(tmp_path_factory.mktemp("nlg"))
    records = [e2e_record(rng) for _ in range(160)]
    pairs = [(r, render(r, rng)) for r in records for _ in range(rng.randint(1, 12))]
    files = {}
    # LoRA's lines, with the quirks its converter strips.
    lines = []
    for i, (record, ref) in enumerate(pairs):
        line = f"{lora_context(record)}||{ref}"
        if i % 17 == 3:
            line = "  " + line + " \t"
        if i % 23 == 5:
            line = line + " || kept after a second bar"
        lines.append(line + ("\r\n" if i % 5 == 0 else "\n"))
        if i % 31 == 0:
            lines.append("\n")
    lines.append("name : Long | " + " | ".join(f"near : {n}" for n in NAMES * 4) + "||A long one.\n")
    files["e2e"] = f"{work}/train.txt"
    with open(files["e2e"], "w", encoding="utf-8", newline="") as f:
        f.write("".join(lines))
    # The challenge CSV.
    files["e2e-csv"] = f"{work}/trainset.csv"
    with open(files["e2e-csv"], "w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["mr", "ref"])
        for i, (record, ref) in enumerate(pairs[:300]):
            writer.writerow([mr_of(record), ref + ("\nsecond line" if i % 29 == 7 else "")])
    # WebNLG: JSON and XML of the same entries.
    entries = []
    for i in range(60):
        lexes = [{"comment": rng.choice(["good", "good", "good", "toFix", "bad"]), "lex": f"Sentence {i}.{k} & more",
                  "xml_id": f"Id{k + 1}"} for k in range(rng.randint(1, 4))]
        triples = triples_of(rng)
        entries.append({str(i + 1): {"category": rng.choice(SEEN + UNSEEN), "lexicalisations": lexes,
                                     "modifiedtripleset": [{"subject": s, "property": p, "object": o}
                                                           for s, p, o in triples],
                                     "size": str(len(triples)), "xml_id": f"Id{i + 1}"}})
    entries.append(dict(entries[0]))  # the same triples again: one item, more references
    entries[-1] = {str(len(entries)): entries[-1]["1"]}
    files["webnlg-json"] = f"{work}/webnlg.json"
    with open(files["webnlg-json"], "w", encoding="utf-8") as f:
        json.dump({"entries": entries}, f, indent=2, ensure_ascii=False)
    xml = ['<?xml version="1.0" encoding="UTF-8"?>\n<benchmark>\n  <entries>']
    for i, wrapper in enumerate(entries):
        entry = wrapper[str(i + 1)]
        xml.append(f'    <entry category={quoteattr(entry["category"])} eid="Id{i + 1}" size="{entry["size"]}">')
        xml.append("      <modifiedtripleset>")
        xml += [f"        <mtriple>{escape(t['subject'])} | {escape(t['property'])} | {escape(t['object'])}</mtriple>"
                for t in entry["modifiedtripleset"]]
        xml.append("      </modifiedtripleset>")
        xml += [f'      <lex comment={quoteattr(x["comment"])} lid="{x["xml_id"]}">{escape(x["lex"])}</lex>'
                for x in entry["lexicalisations"]]
        xml.append("    </entry>")
    xml.append("  </entries>\n</benchmark>\n")
    files["webnlg-xml"] = f"{work}/webnlg.xml"
    with open(files["webnlg-xml"], "w", encoding="utf-8") as f:
        f.write("\n".join(xml))
    # DART.
    dart = [{"tripleset": [[s, p.upper() if k % 2 else p, o] for k, (s, p, o) in enumerate(triples_of(rng))],
             "subtree_was_extended": False,
             "annotations": [{"source": "WikiTableQuestions_mturk", "text": f"Annotation {i}.{k}"}
                             for k in range(rng.randint(0, 3))]} for i in range(50)]
    files["dart"] = f"{work}/dart.json"
    with open(files["dart"], "w", encoding="utf-8") as f:
        json.dump(dart, f, ensure_ascii=False)
    # LoRA's jsonl (what its converters write).
    files["jsonl"] = f"{work}/webnlg.jsonl"
    with open(files["jsonl"], "w", encoding="utf-8") as f:
        for x in python_read("webnlg-json", files["webnlg-json"]):
            f.write(json.dumps({"context": x[0], "completion": x[1], "cate": x[3]}) + "\n")
    return work, files


def python_read(fmt, path):
    """(context, completion, category, seen) of each example, read in Python
    as LoRA's converters read (and, for the official formats, mapped as
    docs/nlg-data.md says)."""
    out = []
    if fmt == "e2e":
        with open(path, encoding="utf-8", newline="") as f:
            for line in f.read().split("\n"):
                line = line.strip()
                if line:
                    context, completion = line.split("||", 1)
                    out.append((context, completion, "", None))
    elif fmt == "e2e-csv":
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                slots = [part.split("[", 1) for part in row["mr"].split("], ")]
                context = " | ".join(f"{LORA_NAMES.get(k, k)} : {v.rstrip(']')}" for k, v in slots)
                out.append((context, row["ref"].strip(), "", None))
    elif fmt == "webnlg-json":
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)["entries"]
        for i, wrapper in enumerate(entries):
            entry = wrapper[str(i + 1)]
            context = " | ".join(f"{t['subject']} : {t['property']} : {t['object']}"
                                 for t in entry["modifiedtripleset"])
            out += [(context, x["lex"], entry["category"], entry["category"] in SEEN)
                    for x in entry["lexicalisations"] if x["comment"] == "good"]
    elif fmt == "webnlg-xml":
        for entry in ElementTree.parse(path).getroot().iter("entry"):
            context = " | ".join(" : ".join(m.text.strip().split(" | ")) for m in entry.iter("mtriple"))
            out += [(context, lex.text.strip(), entry.get("category"), entry.get("category") in SEEN)
                    for lex in entry.iter("lex") if lex.get("comment") == "good"]
    elif fmt == "dart":
        with open(path, encoding="utf-8") as f:
            for entry in json.load(f):
                context = " | ".join(f"{s} : {p.lower()} : {o}" for s, p, o in entry["tripleset"])
                out += [(context, a["text"], "", None) for a in entry["annotations"]]
    elif fmt == "jsonl":
        with open(path, encoding="utf-8") as f:
            for line in f:
                x = json.loads(line)
                out.append((x["context"], x["completion"], "", x.get("cate")))
    return out


def grouped(examples):
    items = {}
    for context, completion, category, seen in examples:
        items.setdefault(context, (context, [], category, seen))[1].append(completion)
    return list(items.values())


@pytest.mark.parametrize("fmt", ["e2e", "e2e-csv", "webnlg-json", "webnlg-xml", "dart", "jsonl"])
def test_readers_match_python(fmt, data, parity):
    _, files = data
    expected = python_read(fmt, files[fmt])
    for requested in ("auto", fmt):
        got = parity("nlg-read", {"file": files[fmt], "format": requested}).json
        examples = [(x["context"], x["completion"], x["category"], x["seen"]) for x in got["examples"]]
        check_equal(f"{fmt} ({requested}): {len(expected)} examples", examples, expected)
        items = [(x["context"], x["references"], x["category"], x["seen"]) for x in got["items"]]
        check_equal(f"{fmt} ({requested}): {len(grouped(expected))} grouped items", items, grouped(expected))
    if fmt == "webnlg-json":
        check("webnlg: comments other than 'good' were in the file and dropped",
              len(expected) < sum(len(next(iter(e.values()))["lexicalisations"])
                                  for e in json.load(open(files[fmt], encoding="utf-8"))["entries"]))
        check("webnlg: seen and unseen items", {x[3] for x in expected} == {True, False})
    if fmt == "e2e":
        check("e2e: several references per context", len(grouped(expected)) < len(expected) / 3)


def gpt2_folder(work, texts):
    folder = f"{work}/gpt2"
    if not os.path.exists(folder):
        corpus = f"{work}/corpus.txt"
        with open(corpus, "w", encoding="utf-8") as f:
            f.write("\n".join(texts))
        byte_level_bpe_vocabulary(corpus, folder, vocab_size=1200, min_frequency=2, special_tokens=["<|endoftext|>"])
        with open(f"{folder}/tokenizer_config.json", "w") as f:
            json.dump({"tokenizer_class": "GPT2Tokenizer"}, f)
    return folder


def reference_encoding(hf, eos, examples, max_seq_length, prompt_length):
    ids, context_lengths, labels, prompts = [], [], [], []
    for context, completion, _, _ in examples:
        head = hf.encode(context, add_special_tokens=False) + [eos]
        full = (head + hf.encode(" " + completion, add_special_tokens=False) + [eos])[:max_seq_length]
        ids.append(full)
        context_lengths.append(len(head))
    longest = max(len(x) for x in ids)
    for full, n in zip(ids, context_lengths):
        labels.append([t if n <= i < len(full) else -100 for i, t in enumerate(full)] + [-100] * (longest - len(full)))
    for context, _, _, _ in grouped(examples):
        prompts.append((hf.encode(context, add_special_tokens=False) + [eos])[-prompt_length:])
    return ids, context_lengths, labels, prompts


def compare_encoding(label, got, hf, eos, examples, max_seq_length, prompt_length):
    ids, context_lengths, labels, prompts = reference_encoding(hf, eos, examples, max_seq_length, prompt_length)
    check_equal(f"{label}: eos id", got["eos"], eos)
    check_equal(f"{label}: ids of {len(ids)} sequences", got["ids"], ids)
    check_equal(f"{label}: context lengths", got["context_lengths"], context_lengths)
    check_equal(f"{label}: labels", got["labels"], labels)
    check_equal(f"{label}: prompts of {len(prompts)} items", got["prompts"], prompts)
    cut = sum(len(x) == max_seq_length for x in ids)
    whole_context_cut = sum(n > max_seq_length for n in context_lengths)
    check(f"{label}: {cut} sequences cut at {max_seq_length}, {whole_context_cut} with no completion left",
          cut > 0 and whole_context_cut > 0)


def test_encoding_matches_transformers(data, parity):
    work, files = data
    texts = [t for fmt in ("e2e", "webnlg-json", "dart") for x in python_read(fmt, files[fmt]) for t in x[:2]]
    folder = gpt2_folder(work, texts)
    hf = GPT2TokenizerFast.from_pretrained(folder)
    eos = hf.convert_tokens_to_ids("<|endoftext|>")
    for fmt in ("e2e", "webnlg-xml", "dart"):
        examples = python_read(fmt, files[fmt])
        got = parity("nlg-encode", {"file": files[fmt], "tokenizer": folder, "max_seq_length": 56,
                                    "prompt_length": 24}).json
        compare_encoding(fmt, got, hf, eos, examples, 56, 24)


def test_legacy_added_tokens_json(data, parity, dsee):
    """<|endoftext|> only in added_tokens.json (older GPT-2-family folders):
    kept whole, as AutoTokenizer keeps it, in `dsee tokenize` and the encoding."""
    work, files = data
    texts = [t for x in python_read("e2e", files["e2e"]) for t in x[:2]]
    folder = f"{work}/legacy"
    corpus = f"{work}/legacy.txt"
    with open(corpus, "w", encoding="utf-8") as f:
        f.write("\n".join(texts))
    byte_level_bpe_vocabulary(corpus, folder, vocab_size=600, min_frequency=2)
    with open(f"{folder}/vocab.json", encoding="utf-8") as f:
        size = len(json.load(f))
    with open(f"{folder}/added_tokens.json", "w") as f:
        json.dump({"<|endoftext|>": size, "<|startoftranscript|>": size + 1}, f)
    with open(f"{folder}/special_tokens_map.json", "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "unk_token": "<|endoftext|>",
                   "eos_token": {"content": "<|endoftext|>", "lstrip": False, "rstrip": False, "normalized": True,
                                 "single_word": False}}, f)
    with open(f"{folder}/tokenizer_config.json", "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer", "model_max_length": 1024}, f)
    hf = AutoTokenizer.from_pretrained(folder)
    eos = hf.convert_tokens_to_ids("<|endoftext|>")
    check_equal("transformers: <|endoftext|> is added_tokens.json's id", eos, size)
    lines = [f"{t}<|endoftext|>" for t in texts[:40]] + \
        ["a <|endoftext|>b<|startoftranscript|> <|endoftext|><|endoftext|>", "<|startoftranscript|>name : x"]
    done = subprocess.run([dsee, "tokenize", "--tokenizer", folder], input="".join(x + "\n" for x in lines),
                          capture_output=True, text=True)
    check("dsee tokenize exits 0", done.returncode == 0, done.stderr)
    got = [json.loads(x)["input_ids"] for x in done.stdout.splitlines()]
    expected = [hf(x)["input_ids"] for x in lines]
    check("transformers keeps <|endoftext|> whole",
          all(eos in e for line, e in zip(lines, expected) if "<|endoftext|>" in line))
    check_equal(f"dsee tokenize == AutoTokenizer on {len(lines)} lines with added tokens", got, expected)
    examples = python_read("e2e", files["e2e"])
    got = parity("nlg-encode", {"file": files["e2e"], "tokenizer": folder, "max_seq_length": 64,
                                "prompt_length": 40}).json
    compare_encoding("legacy folder, e2e", got, hf, eos, examples, 64, 40)


def test_padding_saved_on_e2e_shaped_data(data, parity):
    """Tokens fed per epoch at LoRA's batch 8 and seq_len 512: padded to 512
    (LoRA's loader), to the longest row of shuffled batches, and of
    length-bucketed batches."""
    work, files = data
    texts = [t for fmt in ("e2e", "webnlg-json", "dart") for x in python_read(fmt, files[fmt]) for t in x[:2]]
    folder = gpt2_folder(work, texts)
    got = parity("nlg-encode", {"file": files["e2e"], "tokenizer": folder, "max_seq_length": 512,
                                "prompt_length": 448, "batch_size": 8, "seed": 110}).json["padding"]
    tokens, bucketed, shuffled, fixed = got["tokens"], got["bucketed"], got["shuffled"], got["fixed"]
    check_equal("padding: every sequence counted once", fixed, 512 * len(python_read("e2e", files["e2e"])))
    check(f"padding on E2E-shaped data ({tokens} tokens): fixed 512 feeds {fixed} ({fixed / tokens:.2f}x), "
          f"shuffled batches {shuffled} ({shuffled / tokens:.3f}x), length-bucketed {bucketed} "
          f"({bucketed / tokens:.3f}x)", tokens <= bucketed < shuffled < fixed)

"""Writes the seed corpora of the fuzz targets, tests/fuzz/corpus/<target>/,
from small valid files as other tools make them (transformers' configs, the
tokenizers library's files, GLUE's TSV layouts, h5py) and, given the dsee
binary, from the files a tiny `dsee run` writes (Ω file, masks.h5, a
checkpoint). Run with the .venv python:

    .venv/bin/python tests/fuzz/make_seeds.py [build/bin/dsee]

Existing seeds of the same name are replaced; inputs a fuzzing run once
broke (regression-*) are left alone. The safetensors_header seeds are
hand-made and not written here."""
import json
import os
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def write(target, name, data):
    folder = os.path.join(HERE, "corpus", target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8"))


def model_configs():
    bert = {"model_type": "bert", "architectures": ["BertForSequenceClassification"], "vocab_size": 30,
            "hidden_size": 8, "num_hidden_layers": 2, "num_attention_heads": 2, "intermediate_size": 16,
            "max_position_embeddings": 16, "type_vocab_size": 2, "hidden_act": "gelu", "layer_norm_eps": 1e-12,
            "pad_token_id": 0, "id2label": {"0": "negative", "1": "positive"}, "problem_type":
            "single_label_classification"}
    roberta = dict(bert, model_type="roberta", pad_token_id=1, max_position_embeddings=18, type_vocab_size=1,
                   architectures=["RobertaModel"], pruned_heads={"0": [1]})
    del roberta["id2label"], roberta["problem_type"]
    gpt2 = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": 50, "n_embd": 8,
            "n_layer": 2, "n_head": 2, "n_positions": 16, "activation_function": "gelu_new",
            "layer_norm_epsilon": 1e-5, "scale_attn_by_inverse_layer_idx": True, "num_labels": 1}
    for name, config in (("bert", bert), ("roberta", roberta), ("gpt2", gpt2)):
        write("model_config", name + ".json", json.dumps(config, indent=2))


def tokenizers():
    from tokenizers import ByteLevelBPETokenizer, BertWordPieceTokenizer
    texts = ["the quick brown fox jumps over the lazy dog", "Hello, world! café 東京", "a b c d e f g"] * 4
    with tempfile.TemporaryDirectory() as tmp:
        wordpiece = BertWordPieceTokenizer(lowercase=True)
        wordpiece.train_from_iterator(texts, vocab_size=60, min_frequency=1)
        wordpiece.save(os.path.join(tmp, "wp.json"))
        wordpiece.save_model(tmp)  # vocab.txt
        bpe = ByteLevelBPETokenizer()
        bpe.train_from_iterator(texts, vocab_size=300, min_frequency=1,
                                special_tokens=["<s>", "<pad>", "</s>", "<unk>", "<mask>"])
        bpe.save(os.path.join(tmp, "bpe.json"))
        bpe.save_model(tmp)  # vocab.json, merges.txt
        read = lambda name: open(os.path.join(tmp, name), "rb").read()
        bert_config = json.dumps({"do_lower_case": True, "model_max_length": 512}).encode()
        roberta_config = json.dumps({"add_prefix_space": False, "added_tokens_decoder": {
            "4": {"content": "<mask>", "lstrip": True, "normalized": False, "rstrip": False, "single_word": False,
                  "special": True}}}).encode()
        specials = json.dumps({"pad_token": "<pad>", "cls_token": "<s>", "sep_token": "</s>"}).encode()
        # Layout byte, then the files separated by NUL (tests/fuzz/tokenizer.cpp).
        write("tokenizer", "wordpiece_tokenizer_json", b"\x00" + read("wp.json"))
        write("tokenizer", "bpe_tokenizer_json", b"\x00" + read("bpe.json"))
        write("tokenizer", "vocab_txt", b"\x01" + read("vocab.txt") + b"\x00" + bert_config)
        write("tokenizer", "vocab_json_merges",
              b"\x02" + read("vocab.json") + b"\x00" + read("merges.txt") + b"\x00" + roberta_config + b"\x00" +
              specials)


def glue():
    tasks = ["cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli"]
    files = {
        "cola": "gj04\t1\t\tOur friends won't buy this analysis.\ngj04\t0\t*\tThey drank the pub.\n",
        "sst2": "sentence\tlabel\nhide new secretions \t0\ncontains no wit \t0\nwarm and funny \t1\n",
        "mrpc": "\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n1\t702876\t702977\tAmrozi accused.\tHe said.\n",
        "qqp": "id\tqid1\tqid2\tquestion1\tquestion2\tis_duplicate\n133273\t213221\t213222\tHow?\tWhy?\t0\n",
        "stsb": "index\tgenre\tfilename\tyear\told_index\tsource1\tsource2\tsentence1\tsentence2\tscore\n"
                "0\tmain-captions\tMSRvid\t2012test\t0001\tnone\tnone\tA plane is taking off.\tAn air plane.\t5.000\n",
        "mnli": "index\tpromptID\tpairID\tgenre\tsentence1_binary_parse\tsentence2_binary_parse\t"
                "sentence1_parse\tsentence2_parse\tsentence1\tsentence2\tlabel1\tgold_label\n"
                "0\t31193\t31193n\tgovernment\t( a )\t( b )\t(ROOT)\t(ROOT)\tConceptually cream.\tProduct.\t"
                "neutral\tneutral\n",
        "qnli": "index\tquestion\tsentence\tlabel\n0\tWhen?\tIn 1900.\tentailment\n1\tWho?\tNo one.\tnot_entailment\n",
        "rte": "index\tsentence1\tsentence2\tlabel\n0\tNo weapons.\tWeapons found.\tnot_entailment\r\n",
        "wnli": "index\tsentence1\tsentence2\tlabel\n0\tI stuck a pin.\tI stuck the pin.\t1\n",
    }
    for index, task in enumerate(tasks):
        write("glue_tsv", task + ".tsv", bytes([index]) + files[task].encode("utf-8"))


def id_lists():
    write("id_lists", "lists.json", "[[101, 7592, 102], [101, 102]]")
    write("id_lists", "object.json", json.dumps({"input_ids": [[1, 2, 3], [4]], "token_type_ids": [[0, 0, 1], [0]]}))
    write("id_lists", "ids_only.json", json.dumps({"input_ids": [[0]]}))


def nlg_data():
    """One seed per format of data/nlg_data.h; the first byte picks the format
    (index in automatic, e2e, e2e-csv, webnlg-json, webnlg-xml, dart, jsonl)
    and, divided by 7, the extension (.txt, .csv, .json, .xml, .jsonl)."""
    files = {
        "e2e.txt": (1, "name : Blue Spice | Type : pub||Blue Spice is a pub .\r\n\n  name : A ||x || y\n"),
        "e2e.csv": (2, 'mr,ref\n"name[The Eagle], eatType[pub], priceRange[£20-25]","A ""quoted"", pub.\nTwo"\n'),
        "webnlg.json": (3, json.dumps({"entries": [{"1": {
            "category": "Airport", "modifiedtripleset": [{"subject": "Aarhus_Airport", "property": "cityServed",
                                                          "object": "\"Aarhus, Denmark\""}],
            "lexicalisations": [{"comment": "good", "lex": "Aarhus Airport serves Aarhus."},
                                {"comment": "toFix", "lex": "x"}]}}]})),
        "webnlg.xml": (4, '<?xml version="1.0"?>\n<!-- c --><benchmark><entries>\n<entry category="City" eid="Id1">'
                          "<modifiedtripleset><mtriple>A | p | &quot;B&quot; &#233;</mtriple></modifiedtripleset>"
                          '<lex comment="good" lid="Id1"><![CDATA[A <is> B]]> &amp; C</lex>'
                          '<lex comment="good" lid="Id2"><text>A is B.</text></lex></entry></entries></benchmark>\n'),
        "dart.json": (5, json.dumps([{"tripleset": [["Mars Hill College", "JOINED", "1973"]],
                                      "annotations": [{"source": "x", "text": "It joined in 1973."},
                                                      {"source": "y", "text": "Joined 1973."}]}])),
        "lines.jsonl": (6, '{"context": "a : b : c", "completion": "x", "cate": true}\n{"context": "d", "completion": "y"}\n'),
        "auto-xml.xml": (0 + 7 * 3, "<benchmark><entries><entry category=\"Food\"><modifiedtripleset><mtriple>"
                                    "a | b | c</mtriple></modifiedtripleset><lex comment=\"good\">t</lex></entry>"
                                    "</entries></benchmark>"),
        "auto-dart.json": (0 + 7 * 2, '[{"tripleset": [["a", "B", "c"]], "annotations": [{"text": "t"}]}]'),
    }
    for name, (first, text) in files.items():
        write("nlg_data", name, bytes([first]) + text.encode("utf-8"))


def recipes():
    os.makedirs(os.path.join(HERE, "corpus", "recipe"), exist_ok=True)
    for name in ("demo.toml", "glue-sst2-bert-base.toml"):
        shutil.copy(os.path.join(REPO, "recipes", name), os.path.join(HERE, "corpus", "recipe", name))
    write("recipe", "strings.toml", '[run]\nname = "a \\"quoted\\" name\\twith tab"\nout_dir = \'runs/literal\'\n'
                                    '[task]\nname = "sst2"\ndata_dir = "/data/glue/SST-2"\n')
    write("recipe", "dotted.toml", 'run.name = "x"\ntrain.lr = 3e-4\ntrain.epochs = 3\nrun.compare = ["a: b=c"]\n')
    write("sweep", "grid.toml", 'recipe = "base.toml"\nname = "lr-seed"\n[grid]\n"train.lr" = [1e-4, 3e-4]\n'
                                '[zip]\n"run.seed" = [1, 2]\n"tuning.rank" = [4, 8]\n')
    write("sweep", "nested.toml", 'recipe = "base.toml"\nout_dir = "runs"\ncommand = "run"\n'
                                  '[grid.train]\nlr = [0.001]\nepochs = [1, 2, 3]\n')


def hdf5_files():
    import h5py
    import numpy as np
    folder = os.path.join(HERE, "corpus")
    os.makedirs(os.path.join(folder, "omega_file"), exist_ok=True)
    with h5py.File(os.path.join(folder, "omega_file", "h5py.h5"), "w") as f:
        f.attrs["method"], f.attrs["variant"], f.attrs["seed"], f.attrs["c"] = "grebsmo", "tolerance", 3, 4
        d = f.create_dataset("encoder.layer.0.attention.self.query.weight", data=np.array([0, 5, 9, 15], np.int64))
        d.attrs["shape"] = np.array([4, 4], np.int64)
        d = f.create_dataset("h.0.attn.c_attn.weight:q", data=np.array([], np.int64))
        d.attrs["shape"] = np.array([2, 3], np.int64)
    os.makedirs(os.path.join(folder, "prune_plan"), exist_ok=True)
    with h5py.File(os.path.join(folder, "prune_plan", "h5py.h5"), "w") as f:
        f.attrs["format_version"], f.attrs["kind"] = np.int64(1), "unstructured+heads"
        masks, heads = f.create_group("masks"), f.create_group("heads")
        bits = np.packbits(np.array([1, 0, 1, 1, 0, 1, 1, 1, 1, 0], np.uint8))
        for name, data, encoding, shape in (("a.weight", bits, "bits", [2, 5]),
                                            ("b.weight", np.array([3], np.int64), "zero_indices", [2, 2]),
                                            ("c.weight", np.array([0, 7], np.int64), "one_indices", [8, 8])):
            d = masks.create_dataset(name, data=data, fletcher32=len(data) > 0, chunks=True)
            d.attrs["shape"], d.attrs["encoding"] = np.array(shape, np.int64), encoding
            d.attrs["numel"] = np.int64(shape[0] * shape[1])
        heads.create_dataset("1", data=np.array([0, 2], np.int64))


def dsee_files(dsee):
    """omega.h5, masks.h5 and the smallest checkpoint of a tiny DSEE run."""
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([dsee, "run", os.path.join(REPO, "recipes", "demo.toml"), "--set", f"run.out_dir={tmp}",
                        "--set", "run.compare=[]", "--set", "tuning.method=dsee", "--set", "tuning.rank=2",
                        "--set", "omega.c=4", "--set", "prune.kind=unstructured", "--set", "prune.p_adapt=0.3",
                        "--set", "prune.p_rest=0.3", "--set", "task.train_size=32", "--set", "task.dev_size=16",
                        "--set", "train.epochs=1", "--set", "retune.epochs=1", "--set", "ckpt.every=1"],
                       check=True)
        run = os.path.join(tmp, "demo")
        shutil.copy(os.path.join(run, "omega.h5"), os.path.join(HERE, "corpus", "omega_file", "dsee.h5"))
        shutil.copy(os.path.join(run, "masks.h5"), os.path.join(HERE, "corpus", "prune_plan", "dsee.h5"))
        ckpt = os.path.join(run, "ckpt", "retune")
        newest = sorted((f for f in os.listdir(ckpt) if f.endswith(".h5")), key=lambda f: int(f[5:-3]))[-1]
        os.makedirs(os.path.join(HERE, "corpus", "checkpoint"), exist_ok=True)
        shutil.copy(os.path.join(ckpt, newest), os.path.join(HERE, "corpus", "checkpoint", "dsee.h5"))


def main():
    model_configs()
    tokenizers()
    glue()
    id_lists()
    nlg_data()
    recipes()
    hdf5_files()
    if len(sys.argv) > 1:
        dsee_files(sys.argv[1])


if __name__ == "__main__":
    main()

"""`dsee run` on a data-to-text task (task.name = e2e) end to end.

The data is generated: restaurant records (name, food, area) rendered by a
fixed grammar in two ways, in LoRA's E2E line format (`context||completion`),
so a small model can learn it exactly and the dev references come in groups.
The model is a random GPT-2 (2 layers, width 64) saved by transformers with a
byte-level BPE trained by `tokenizers` on the training lines; its weights are
drawn with initializer_range 0.2, because at GPT-2's 0.02 the frozen tied
embeddings cap the logits near uniform and no low-rank update can fit the
data. DSEE adapts every linear (c_attn, c_proj, c_fc).

  learns_and_scores  the pretrained model scores BLEU < 5 on dev, the trained
               one > 80 (measured 96–99 on the 2-core development machine);
               the eval stage's hypotheses and references files hold one
               line per dev context (references grouped by context), and
               sacrebleu on those files gives the BLEU and TER that
               stages/eval.json records, within 0.01; with eval.splits =
               ["dev", "test"] the same holds for the test split's files
               and its scores under "test" (summary.json too); after unstructured
               pruning and re-tuning, the hf export loaded by transformers
               and decoded by GPT2LMHeadModel.generate with the same beam
               settings, prompts and stop ids gives the same hypotheses, and
               so does `dsee generate --run RUN --append-eos`.
  webnlg_run, dart_run
               a shortened pipeline (6 epochs, no pruning) on WebNLG 2017
               JSON and DART JSON files of the same generated records (dev
               and test splits): the eval stage's files hold each split's
               contexts and references, sacrebleu on them gives the
               recorded BLEU and TER, for WebNLG also over the seen and the
               unseen categories (bleu_seen, bleu_unseen); the trained
               model's dev BLEU > 30.
  resume_length_buckets
               one epoch with length-bucketed batches stopped by SIGTERM
               after step 7 (checkpoint mid-epoch) and resumed ends with
               the uninterrupted run's tensors and losses bit for bit;
               train.length_buckets = false gives other losses.
  ranks        two epochs under mpirun -n 2: the logged losses equal 1
               process's within 1e-5, the trained tensors within 1e-4 of their
               largest value (AdamW amplifies round-off where |g| ~ ε), the
               pretrained model's dev scores are identical; the eval stage
               alone under mpirun -n 2
               in a finished 1-process run (the dev decoding sharded by
               whole batches) writes the same dev and test hypotheses files
               byte for byte and the same scores.
"""
import json
import os
import random

import pytest
import torch
import transformers
from safetensors.torch import load_file

from harness.models import gpt2_bpe_tokenizer
from harness import check, check_close, check_equal
from harness.runs import run_command as run, write_recipe

NAMES = ["The Eagle", "Blue Spice", "The Mill", "Cotto", "Zizzi", "Aromi", "The Punter", "Loch Fyne"]
FOODS = ["French", "Italian", "Chinese", "English", "Indian", "Japanese", "fast food"]
AREAS = ["riverside", "city centre"]
MAX_SEQ, MAX_NEW, BEAM, PENALTY, NGRAM, EVAL_BATCH = 48, 24, 4, 0.9, 4, 8


def references(name, food, area):
    return [f"{name} serves {food} food in the {area} .", f"{name} is a {food} restaurant in the {area} area ."]


def e2e_lines(rng, records):
    lines = []
    for _ in range(records):
        name, food, area = rng.choice(NAMES), rng.choice(FOODS), rng.choice(AREAS)
        context = f"name : {name} | food : {food} | area : {area}"
        lines += [f"{context}||{reference}" for reference in references(name, food, area)]
    return lines


@pytest.fixture(scope="module")
def task(tmp_path_factory):
    """(work folder, model folder, data folder)."""
    work = tmp_path_factory.mktemp("nlg-run")
    rng = random.Random(0)
    data = work / "e2e"
    data.mkdir()
    train = e2e_lines(rng, 150)
    (data / "train.txt").write_text("\n".join(train) + "\n", encoding="utf-8")
    (data / "valid.txt").write_text("\n".join(e2e_lines(rng, 16)) + "\n", encoding="utf-8")
    (data / "test.txt").write_text("\n".join(e2e_lines(rng, 12)) + "\n", encoding="utf-8")
    (work / "corpus.txt").write_text("\n".join(line.replace("||", " ") for line in train), encoding="utf-8")
    model = work / "model"
    tokenizer = gpt2_bpe_tokenizer(work / "corpus.txt", model, vocab_size=600)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                     eos_token_id=0, initializer_range=0.2)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(model))
    return work, model, data


def recipe_text(model, data, out, task_name="e2e", test_file="test.txt"):
    return f"""[run]
name = "{task_name}-tiny"
out_dir = "{out}"
seed = 1
[model]
path = "{model}"
[task]
name = "{task_name}"
data_dir = "{data}"
test_file = "{test_file}"
max_seq_length = {MAX_SEQ}
[tuning]
method = "dsee"
rank = 16
alpha = 16.0
target_modules = ["c_attn", "c_proj", "c_fc"]
[omega]
c = 16
[train]
lr = 0.01
epochs = 12
batch_size = 16
label_smoothing = 0.1
[prune]
kind = "unstructured"
p_adapt = 0.2
p_rest = 0.2
[retune]
epochs = 3
[eval]
batch_size = {EVAL_BATCH}
beam_size = {BEAM}
length_penalty = {PENALTY}
no_repeat_ngram_size = {NGRAM}
max_new_tokens = {MAX_NEW}
splits = ["dev", "test"]
[export]
format = "hf"
"""


def one_process(dsee, task):
    work, model, data = task
    out = work / "out1"
    recipe = write_recipe(str(work), recipe_text(model, data, out))
    rc, text, seconds = run([dsee, "run", recipe], 300)
    print(f"--- 1 process: exit {rc} after {seconds:.1f} s")
    check("1 process: dsee run exits 0", rc == 0, text if rc else "")
    return out / "e2e-tiny"


def completion(tokenizer, ids, stop_ids):
    """The hypothesis text of generated ids, as dsee writes it (data/nlg_text.h)."""
    if ids and ids[-1] in stop_ids:
        ids = ids[:-1]
    text = tokenizer.decode(ids).split("\n\n")[0]
    return text.replace("\n", " ").replace("\r", " ").strip(" \t")


def grouped(pairs):
    """{context: [its references]} in the order contexts first appear (data/nlg_data.h nlg_group)."""
    contexts = {}
    for context, reference in pairs:
        contexts.setdefault(context, []).append(reference)
    return contexts


def e2e_contexts(path):
    return grouped(line.split("||") for line in path.read_text(encoding="utf-8").splitlines())


def sacrebleu_scores(hyps, refs, rows=None):
    """(BLEU, TER) by sacrebleu of hypotheses and reference files (lists of lines), on `rows` only if given."""
    import sacrebleu
    rows = range(len(hyps)) if rows is None else rows
    hyps = [hyps[k] for k in rows]
    streams = [[r[k] if r[k] else None for k in rows] for r in refs]
    return (sacrebleu.metrics.BLEU(lowercase=True).corpus_score(hyps, streams).score,
            sacrebleu.metrics.TER().corpus_score(hyps, streams).score)


def check_split_files(run_dir, split, contexts, scores):
    """The eval stage's hypotheses/<split>.* files hold one line per context of `contexts` ({context:
    references}) and its references, and sacrebleu on them gives the recorded `scores`' BLEU and TER.
    Returns (hypotheses, reference files' lines)."""
    hypotheses_dir = run_dir / "hypotheses"
    hyps = (hypotheses_dir / f"{split}.hyp.txt").read_text(encoding="utf-8").splitlines()
    check_equal(f"{split}: one hypothesis per context", len(hyps), len(contexts))
    ref_files = sorted(hypotheses_dir.glob(f"{split}.ref[0-9]*.txt"), key=lambda f: int(f.name[len(split) + 4:-4]))
    check_equal(f"{split}: one references file per reference index", len(ref_files), max(map(len, contexts.values())))
    refs = [f.read_text(encoding="utf-8").splitlines() for f in ref_files]
    for k, (context, references) in enumerate(contexts.items()):
        check_equal(f"{split} context {k}: its references across the files", [r[k] for r in refs if r[k]], references)
    groups = (hypotheses_dir / f"{split}.refs.txt").read_text(encoding="utf-8").split("\n\n")
    check_equal(f"{split}.refs.txt: the references grouped by blank lines",
                [g.split("\n") for g in groups if g.strip()], list(contexts.values()))
    bleu, ter = sacrebleu_scores(hyps, refs)
    check_close(f"{split}: BLEU of the files by sacrebleu = the recorded one", scores["bleu"], bleu, abs=0.01)
    check_close(f"{split}: TER of the files by sacrebleu = the recorded one", scores["ter"], ter, abs=0.01)
    return hyps, refs


def test_learns_and_scores(dsee, task):
    run_dir = one_process(dsee, task)
    summary = json.loads((run_dir / "summary.json").read_text())
    recorded = json.loads((run_dir / "stages/eval.json").read_text())
    before, after = summary["stages"]["pretrained"]["dev"], recorded["dev"]
    print(f"dev BLEU: pretrained {before['bleu']:.2f}, trained {summary['stages']['train']['dev']['bleu']:.2f}, "
          f"after pruning and re-tuning {after['bleu']:.2f}; test BLEU {recorded['test']['bleu']:.2f}")
    check("the pretrained model scores BLEU < 5", before["bleu"] < 5, f"{before['bleu']}")
    check("the trained (pruned, re-tuned) model scores BLEU > 80", after["bleu"] > 80, f"{after['bleu']}")

    contexts = e2e_contexts(task[2] / "valid.txt")
    hyps, _ = check_split_files(run_dir, "dev", contexts, after)
    # eval.splits = ["dev", "test"]: the test split beside the dev one.
    check_split_files(run_dir, "test", e2e_contexts(task[2] / "test.txt"), recorded["test"])
    check_equal("summary.json: the eval stage's dev scores", summary["dev"], after)
    check_equal("summary.json: the eval stage's test scores", summary["test"], recorded["test"])
    check("the test split is scored on its own contexts", recorded["test"] != after)

    # The export decodes to the same hypotheses under transformers.
    tokenizer = transformers.GPT2TokenizerFast.from_pretrained(str(task[1]))
    model = transformers.GPT2LMHeadModel.from_pretrained(str(run_dir / "export")).eval()
    eos = tokenizer.convert_tokens_to_ids("<|endoftext|>")
    blank = tokenizer.encode("\n\n")
    stop_ids = [eos] + (blank if len(blank) == 1 and blank[0] != eos else [])
    prompts = [(tokenizer.encode(c) + [eos])[-(MAX_SEQ - MAX_NEW):] for c in contexts]
    expected = []
    for first in range(0, len(prompts), EVAL_BATCH):
        batch = prompts[first:first + EVAL_BATCH]
        width = max(map(len, batch))
        ids = torch.tensor([[eos] * (width - len(p)) + p for p in batch])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in batch])
        with torch.no_grad():
            rows = model.generate(input_ids=ids, attention_mask=mask, num_beams=BEAM, length_penalty=PENALTY,
                                  no_repeat_ngram_size=NGRAM, max_new_tokens=MAX_NEW, eos_token_id=stop_ids,
                                  pad_token_id=eos, do_sample=False)
        for row in rows[:, width:].tolist():
            cut = []
            for token in row:
                cut.append(token)
                if token in stop_ids:
                    break
            expected.append(completion(tokenizer, cut, stop_ids))
    check_equal("the hf export generates the eval stage's hypotheses under transformers", hyps, expected)

    # dsee generate --run --append-eos with the eval stage's settings writes the same file.
    (task[0] / "contexts.txt").write_text("\n".join(contexts) + "\n", encoding="utf-8")
    out = task[0] / "generated.txt"
    rc, text, _ = run([dsee, "generate", "--run", str(run_dir), "--input", str(task[0] / "contexts.txt"), "--out",
                       str(out), "--append-eos", "--beam", str(BEAM), "--length-penalty", str(PENALTY),
                       "--no-repeat-ngram", str(NGRAM), "--max-new-tokens", str(MAX_NEW), "--batch-size",
                       str(EVAL_BATCH), "--max-prompt-tokens", str(MAX_SEQ - MAX_NEW)], 120)
    check("dsee generate --run exits 0", rc == 0, text if rc else "")
    check_equal("dsee generate --run --append-eos writes the eval stage's hypotheses",
                out.read_text(encoding="utf-8").splitlines(), hyps)


def test_ranks(dsee, mpiexec, task):
    import shutil
    work, model, data = task
    mpirun = [mpiexec, "-n", "2", "--oversubscribe", "--bind-to", "none"]
    # Training: two epochs (38 steps) on 1 process and on 2 ranks.
    short = ["--set", "train.epochs=2", "--set", "prune.kind=none", "--set", "export.format=none"]
    runs = {}
    for n in (1, 2):
        out = work / f"short{n}"
        recipe = write_recipe(str(work), recipe_text(model, data, out), name=f"short{n}.toml")
        rc, text, seconds = run((mpirun if n > 1 else []) + [dsee, "run", recipe] + short, 300)
        print(f"--- {n} rank(s), 2 epochs: exit {rc} after {seconds:.1f} s")
        check(f"{n} rank(s): dsee run exits 0", rc == 0, text if rc else "")
        runs[n] = out / "e2e-tiny"
    logged = [[json.loads(line) for line in open(runs[n] / "metrics.jsonl")] for n in (1, 2)]
    losses = [[r["loss"] for r in records if r["kind"] == "train"] for records in logged]
    check_equal("2 ranks: as many logged steps", len(losses[1]), len(losses[0]))
    check_close(f"2 ranks: the {len(losses[0])} logged losses (the global token mean)", losses[1], losses[0],
                rel_each=1e-5, floor=1.0, reference="1 process")
    # AdamW turns the ranks' round-off in gradients near zero (|g| ~ ε) into
    # relative differences of the update: after 38 steps the tensors agree to
    # about 1e-5 of their largest value, not bit for bit.
    a, b = load_file(str(runs[1] / "trainable-train.safetensors")), load_file(str(runs[2] / "trainable-train.safetensors"))
    check_equal("2 ranks: trainable-train.safetensors holds the same tensors", sorted(b), sorted(a))
    for key in a:
        check_close(f"2 ranks: {key}", b[key], a[key], abs=1e-4 * float(a[key].abs().max()))
    check_equal("2 ranks: the pretrained model's dev scores (the same weights decoded in shards)",
                json.loads((runs[2] / "summary.json").read_text())["stages"]["pretrained"]["dev"],
                json.loads((runs[1] / "summary.json").read_text())["stages"]["pretrained"]["dev"])

    # Decoding: the eval stage alone under 2 ranks, in a finished 1-process
    # run, decodes the very same tensors in shards of whole batches.
    base = one_process(dsee, task)
    saved = work / "hypotheses-1"
    shutil.move(base / "hypotheses", saved)
    eval_1 = json.loads((base / "stages/eval.json").read_text())
    recipe = write_recipe(str(work), recipe_text(model, data, work / "out1"))
    rc, text, seconds = run(mpirun + [dsee, "run", recipe, "--set", 'run.stages=["eval"]'], 300)
    print(f"--- 2 ranks, eval stage: exit {rc} after {seconds:.1f} s")
    check("2 ranks, eval stage: dsee run exits 0", rc == 0, text if rc else "")
    for name in sorted(os.listdir(saved)):
        check_equal(f"2 ranks: hypotheses/{name} equals 1 process's", (base / "hypotheses" / name).read_bytes(),
                    (saved / name).read_bytes())
    eval_2 = json.loads((base / "stages/eval.json").read_text())
    check("2 ranks: the files include the test split's", "test.hyp.txt" in os.listdir(saved))
    for split in ("dev", "test"):
        check_equal(f"2 ranks: the eval stage's {split} scores", eval_2[split], eval_1[split])


# WebNLG and DART files of the same records (data/nlg_data.h's formats): the
# record's two sentences are the entry's references. WebNLG categories are
# drawn from seen and unseen ones; a toFix lexicalisation is not a reference.
SEEN, UNSEEN = ["Airport", "Building", "City"], ["Athlete", "Politician"]


def records(rng, n):
    return [(rng.choice(NAMES), rng.choice(FOODS), rng.choice(AREAS)) for _ in range(n)]


def webnlg_file(path, rng, n):
    """Writes a WebNLG 2017 JSON file of n records; returns {context: references} and {context: seen}."""
    entries, contexts, seen = [], {}, {}
    for i, (name, food, area) in enumerate(records(rng, n)):
        category = rng.choice(SEEN + UNSEEN)
        subject = name.replace(" ", "_")
        triples = [{"subject": subject, "property": "food", "object": food},
                   {"subject": subject, "property": "area", "object": f'"{area}"'}]
        lexes = [{"comment": "good", "lex": r, "xml_id": f"Id{k + 1}"} for k, r in enumerate(references(name, food, area))]
        lexes.append({"comment": "toFix", "lex": f"{name} food {food}", "xml_id": "Id3"})
        entries.append({str(i + 1): {"category": category, "lexicalisations": lexes, "modifiedtripleset": triples,
                                     "size": "2", "xml_id": f"Id{i + 1}"}})
        context = " | ".join(f"{t['subject']} : {t['property']} : {t['object']}" for t in triples)
        contexts.setdefault(context, []).extend(x["lex"] for x in lexes if x["comment"] == "good")
        seen.setdefault(context, category in SEEN)
    path.write_text(json.dumps({"entries": entries}, indent=1), encoding="utf-8")
    return contexts, seen


def dart_file(path, rng, n):
    """Writes a DART JSON file of n records (relations in mixed case); returns {context: references}."""
    entries, contexts = [], {}
    for name, food, area in records(rng, n):
        tripleset = [[name, "FOOD", food], [name, "Area", area]]
        annotations = [{"source": "generated", "text": r} for r in references(name, food, area)]
        entries.append({"tripleset": tripleset, "subtree_was_extended": False, "annotations": annotations})
        context = " | ".join(f"{s} : {r.lower()} : {o}" for s, r, o in tripleset)
        contexts.setdefault(context, []).extend(a["text"] for a in annotations)
    path.write_text(json.dumps(entries), encoding="utf-8")
    return contexts


SHORT = ["--set", "prune.kind=none", "--set", "retune.epochs=0", "--set", "export.format=none"]


def format_run(dsee, task, task_name, write_file, seed):
    """Writes train.json (150 records), dev.json (16) and test.json (12) with write_file(path, rng, n), runs
    the recipe on them as task `task_name` for 6 epochs without pruning, re-tuning or export, and returns
    (stages/eval.json, the run directory, {split: what write_file returned})."""
    work, model, _ = task
    rng = random.Random(seed)
    data = work / task_name
    data.mkdir()
    write_file(data / "train.json", rng, 150)
    splits = {split: write_file(data / f"{split}.json", rng, n) for split, n in (("dev", 16), ("test", 12))}
    out = work / f"out-{task_name}"
    recipe = write_recipe(str(work), recipe_text(model, data, out, task_name, "test.json"), name=f"{task_name}.toml")
    rc, text, seconds = run([dsee, "run", recipe, "--set", "train.epochs=6"] + SHORT, 300)
    print(f"--- {task_name}, 6 epochs: exit {rc} after {seconds:.1f} s")
    check(f"{task_name}: dsee run exits 0", rc == 0, text if rc else "")
    run_dir = out / f"{task_name}-tiny"
    recorded = json.loads((run_dir / "stages/eval.json").read_text())
    print(f"{task_name} dev BLEU {recorded['dev']['bleu']:.2f}, test BLEU {recorded['test']['bleu']:.2f}")
    check(f"{task_name}: the trained model's dev BLEU > 30", recorded["dev"]["bleu"] > 30, f"{recorded['dev']['bleu']}")
    return recorded, run_dir, splits


def test_webnlg_run(dsee, task):
    recorded, run_dir, splits = format_run(dsee, task, "webnlg", webnlg_file, 1)
    for split, (contexts, seen) in splits.items():
        scores = recorded[split]
        hyps, refs = check_split_files(run_dir, split, contexts, scores)
        flags = list(seen.values())
        check(f"{split}: both seen and unseen contexts", any(flags) and not all(flags))
        for part, rows in (("seen", [k for k, f in enumerate(flags) if f]),
                           ("unseen", [k for k, f in enumerate(flags) if not f])):
            bleu, ter = sacrebleu_scores(hyps, refs, rows)
            check_close(f"{split}: BLEU of the {part} contexts by sacrebleu = bleu_{part}", scores[f"bleu_{part}"],
                        bleu, abs=0.01)
            check_close(f"{split}: TER of the {part} contexts by sacrebleu = ter_{part}", scores[f"ter_{part}"], ter,
                        abs=0.01)


def test_dart_run(dsee, task):
    recorded, run_dir, splits = format_run(dsee, task, "dart", dart_file, 2)
    for split, contexts in splits.items():
        check_split_files(run_dir, split, contexts, recorded[split])
        check_equal(f"dart {split}: no seen / unseen scores", sorted(k for k in recorded[split] if "seen" in k), [])


def test_resume_length_buckets(dsee, task):
    work, model, data = task
    # One epoch of 19 steps, decoding kept small; the same recipe for every run.
    fast = ["--set", "train.epochs=1", "--set", "eval.beam_size=1", "--set", "eval.max_items=4", "--set",
            'eval.splits=["dev"]'] + SHORT
    runs = {}
    for name, extra, env in (("straight", [], None), ("resumed", [], "7"),
                             ("shuffled", ["--set", "train.length_buckets=false"], None)):
        out = work / f"resume-{name}"
        recipe = write_recipe(str(work), recipe_text(model, data, out), name=f"resume-{name}.toml")
        command = [dsee, "run", recipe] + fast + extra
        if env:  # SIGTERM after step 7 (a checkpoint there, mid-epoch), then the same command resumes
            rc, text, seconds = run(command, 300, env=dict(os.environ, DSEE_TEST_STOP_AFTER_STEP=env))
            print(f"--- {name}: stopped with exit {rc} after {seconds:.1f} s")
            check(f"{name}: stopped by its SIGTERM (exit 143)", rc == 143, text)
            check(f"{name}: a checkpoint mid-epoch", (out / "e2e-tiny/ckpt/step-7.h5").exists(), text)
        rc, text, seconds = run(command, 300)
        print(f"--- {name}: exit {rc} after {seconds:.1f} s")
        check(f"{name}: dsee run exits 0", rc == 0, text if rc else "")
        if env:
            resumed = "resuming train from ckpt/step-7.h5" in text
            check(f"{name}: resumed from step 7", resumed, "" if resumed else text)
        runs[name] = out / "e2e-tiny"
    check_equal("length buckets, resumed mid-epoch: trainable-train.safetensors byte for byte",
                (runs["resumed"] / "trainable-train.safetensors").read_bytes(),
                (runs["straight"] / "trainable-train.safetensors").read_bytes())
    losses = {n: [r["loss"] for r in map(json.loads, open(runs[n] / "metrics.jsonl")) if r["kind"] == "train"]
              for n in runs}
    check_equal("length buckets, resumed mid-epoch: the logged losses", losses["resumed"], losses["straight"])
    check("train.length_buckets = false trains on other batches (other losses)",
          losses["shuffled"] != losses["straight"] and len(losses["shuffled"]) == len(losses["straight"]))

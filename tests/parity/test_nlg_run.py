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
               stages/eval.json records, within 0.01; after unstructured
               pruning and re-tuning, the hf export loaded by transformers
               and decoded by GPT2LMHeadModel.generate with the same beam
               settings, prompts and stop ids gives the same hypotheses, and
               so does `dsee generate --run RUN --append-eos`.
  ranks        two epochs under mpirun -n 2: the logged losses equal 1
               process's within 1e-5, the trained tensors within 1e-4 of their
               largest value (AdamW amplifies round-off where |g| ~ ε), the
               pretrained model's dev scores are identical; the eval stage
               alone under mpirun -n 2
               in a finished 1-process run (the dev decoding sharded by
               whole batches) writes the same hypotheses files byte for byte
               and the same scores.
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
    (work / "corpus.txt").write_text("\n".join(line.replace("||", " ") for line in train), encoding="utf-8")
    model = work / "model"
    tokenizer = gpt2_bpe_tokenizer(work / "corpus.txt", model, vocab_size=600)
    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=0,
                                     eos_token_id=0, initializer_range=0.2)
    transformers.GPT2LMHeadModel(config).save_pretrained(str(model))
    return work, model, data


def recipe_text(model, data, out):
    return f"""[run]
name = "e2e-tiny"
out_dir = "{out}"
seed = 1
[model]
path = "{model}"
[task]
name = "e2e"
data_dir = "{data}"
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


def test_learns_and_scores(dsee, task):
    import sacrebleu
    run_dir = one_process(dsee, task)
    summary = json.loads((run_dir / "summary.json").read_text())
    before, after = summary["stages"]["pretrained"]["dev"], json.loads((run_dir / "stages/eval.json").read_text())["dev"]
    print(f"dev BLEU: pretrained {before['bleu']:.2f}, trained {summary['stages']['train']['dev']['bleu']:.2f}, "
          f"after pruning and re-tuning {after['bleu']:.2f}")
    check("the pretrained model scores BLEU < 5", before["bleu"] < 5, f"{before['bleu']}")
    check("the trained (pruned, re-tuned) model scores BLEU > 80", after["bleu"] > 80, f"{after['bleu']}")

    hypotheses_dir = run_dir / "hypotheses"
    hyps = (hypotheses_dir / "dev.hyp.txt").read_text(encoding="utf-8").splitlines()
    contexts = {}
    for line in (task[2] / "valid.txt").read_text(encoding="utf-8").splitlines():
        context, reference = line.split("||")
        contexts.setdefault(context, []).append(reference)
    check_equal("one hypothesis per dev context", len(hyps), len(contexts))
    ref_files = sorted(hypotheses_dir.glob("dev.ref[0-9]*.txt"), key=lambda f: int(f.name[7:-4]))
    check_equal("one references file per reference index", len(ref_files), max(map(len, contexts.values())))
    refs = [f.read_text(encoding="utf-8").splitlines() for f in ref_files]
    for k, (context, grouped) in enumerate(contexts.items()):
        check_equal(f"context {k}: its references across the files", [r[k] for r in refs if r[k]], grouped)
    groups = (hypotheses_dir / "dev.refs.txt").read_text(encoding="utf-8").split("\n\n")
    check_equal("dev.refs.txt: the references grouped by blank lines",
                [g.split("\n") for g in groups if g.strip()], list(contexts.values()))
    streams = [[line if line else None for line in r] for r in refs]
    bleu = sacrebleu.metrics.BLEU(lowercase=True).corpus_score(hyps, streams).score
    ter = sacrebleu.metrics.TER().corpus_score(hyps, streams).score
    check_close("BLEU of the files by sacrebleu = stages/eval.json", after["bleu"], bleu, abs=0.01)
    check_close("TER of the files by sacrebleu = stages/eval.json", after["ter"], ter, abs=0.01)

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
    eval_1 = json.loads((base / "stages/eval.json").read_text())["dev"]
    recipe = write_recipe(str(work), recipe_text(model, data, work / "out1"))
    rc, text, seconds = run(mpirun + [dsee, "run", recipe, "--set", 'run.stages=["eval"]'], 300)
    print(f"--- 2 ranks, eval stage: exit {rc} after {seconds:.1f} s")
    check("2 ranks, eval stage: dsee run exits 0", rc == 0, text if rc else "")
    for name in sorted(os.listdir(saved)):
        check_equal(f"2 ranks: hypotheses/{name} equals 1 process's", (base / "hypotheses" / name).read_bytes(),
                    (saved / name).read_bytes())
    check_equal("2 ranks: the eval stage's dev scores", json.loads((base / "stages/eval.json").read_text())["dev"],
                eval_1)

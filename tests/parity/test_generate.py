"""dsee generate (core/train/generation.h) against transformers' generate.

A small random GPT-2 with a byte-level BPE trained on E2E-like lines decodes
contexts of different lengths. dsee's new tokens (`dsee generate --ids`, cut
after the first eos id) must equal GPT2LMHeadModel.generate(do_sample=False,
...) on the same contexts, left-padded into the same batches, cut the same
way: greedy (beam 1), beam 4 and 10, length penalty 0.8 / 0.9,
no_repeat_ngram_size 4, min_new_tokens, two eos ids, batches of 1 and of 3
(prompts of different lengths together, a short last batch). With a LoRA
update attached (dsee_parity lora-generate) the reference is the PEFT model
with the same adapters.

Random tiny models give near-uniform next-token distributions, where every
search picks the same tokens and eos almost never wins. The model here is
sharpened so the searches differ: the embeddings are scaled (logits of a few
units), the blocks' projections too, and ln_f's bias plus a push of both eos
embeddings along it make eos likely after some tokens.
test_the_cases_exercise_the_search checks that this holds for the cases
(beams differ from greedy, n-gram banning and min_new_tokens change outputs,
both eos ids end hypotheses, others run to max_new_tokens), so a search that
ignored an option would fail a case.

Tests: test_generate_matches_transformers[case], test_the_cases_exercise_the_search,
test_lora_generate_matches_peft, test_run_model_decodes_as_its_export (a
tiny E2E LoRA run by `dsee run`, decoded with --run, against transformers on
its exported folder), test_default_eos_and_text_output,
test_errors_exit_non_zero.
"""
import json
import random
import subprocess

import pytest
import torch
import transformers

from harness.models import gpt2_bpe_tokenizer
from harness import check, check_equal
from harness.lora import copy_lora, draw_lora, lora_recipe, lora_tensors

NAMES = ["The Eagle", "Blue Spice", "The Mill", "Cotto", "Zizzi", "Aromi", "The Punter", "Loch Fyne"]
FOODS = ["French", "Italian", "Chinese", "English", "Indian", "Japanese", "fast food"]
AREAS = ["riverside", "city centre"]
CONTEXTS = [
    "name : The Eagle | food : French | area : riverside",
    "name : Zizzi",
    "Cotto serves Italian food in the city centre . name : Aromi | food : Chinese | area : city centre",
    "The",
    "name : Blue Spice | area : riverside",
    "food : Japanese | name : Loch Fyne | area : city centre | name : The Mill",
    "Aromi serves",
]
HIDDEN = 48
EOS = 0  # <|endoftext|>, the first token the vocabulary trainer adds
SECOND_EOS_TEXT = " the"

# name: (beam, length_penalty, no_repeat_ngram, max_new_tokens, min_new_tokens, batch_size)
CASES = {
    "greedy-unbatched": (1, 1.0, 0, 20, 0, 1),
    "greedy-batched-ngram": (1, 1.0, 4, 20, 0, 3),
    "beam4-lp0.8-ngram4-batched": (4, 0.8, 4, 20, 0, 3),
    "beam10-lp0.9-ngram4-unbatched": (10, 0.9, 4, 24, 0, 1),
    "beam10-lp0.8-ngram4-batched": (10, 0.8, 4, 24, 0, 3),
    "beam10-lp0.8-no-ngram-batched": (10, 0.8, 0, 24, 0, 3),
    "beam10-lp0.9-min6-batched": (10, 0.9, 4, 24, 6, 3),
    "beam4-lp1.0-min6-unbatched": (4, 1.0, 0, 16, 6, 1),
}


def sharpen(model, eos_ids, generator):
    """Scales the random GPT-2 so that its searches make choices (module doc)."""
    with torch.no_grad():
        model.transformer.wte.weight.mul_(20.0)
        for param in model.transformer.h.parameters():
            if param.dim() == 2:
                param.mul_(5.0)
        direction = torch.randn(HIDDEN, generator=generator)
        direction /= direction.norm()
        model.transformer.ln_f.bias.copy_(direction)
        for eos in eos_ids:
            model.transformer.wte.weight[eos] += 3.0 * direction


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(work folder, model folder, HF tokenizer, HF model, eos ids)."""
    work = tmp_path_factory.mktemp("generate")
    rng = random.Random(0)
    lines = []
    for _ in range(300):
        name, food, area = rng.choice(NAMES), rng.choice(FOODS), rng.choice(AREAS)
        lines.append(f"name : {name} | food : {food} | area : {area}\n{name} serves {food} food in the {area}.")
    (work / "corpus.txt").write_text("\n".join(lines), encoding="utf-8")
    folder = work / "model"
    tokenizer = gpt2_bpe_tokenizer(work / "corpus.txt", folder, vocab_size=330)
    second = tokenizer.encode(SECOND_EOS_TEXT)
    assert len(second) == 1, f"{SECOND_EOS_TEXT!r} is {second} in the trained vocabulary; pick another second eos"
    eos_ids = [EOS, second[0]]

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=len(tokenizer), n_embd=HIDDEN, n_layer=2, n_head=4, n_positions=128,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOS,
                                     eos_token_id=EOS)
    model = transformers.GPT2LMHeadModel(config).eval()
    sharpen(model, eos_ids, torch.Generator().manual_seed(1))
    model.save_pretrained(str(folder))
    (work / "contexts.txt").write_text("\n".join(CONTEXTS) + "\n", encoding="utf-8")
    return work, folder, tokenizer, model, eos_ids


def cut_at_eos(row, eos_ids):
    """The tokens up to and including the first eos id."""
    out = []
    for token in row:
        out.append(token)
        if token in eos_ids:
            break
    return out


def reference(model, tokenizer, contexts, case, eos_ids):
    """transformers' new tokens per context, batched as dsee batches them (file order, left padding)."""
    beam, penalty, ngram, max_new, min_new, batch = case
    tokenizer.pad_token = tokenizer.eos_token
    tokenizer.padding_side = "left"
    out = []
    for first in range(0, len(contexts), batch):
        encoded = tokenizer(contexts[first:first + batch], return_tensors="pt", padding=True)
        with torch.no_grad():
            rows = model.generate(**encoded, num_beams=beam, length_penalty=penalty, no_repeat_ngram_size=ngram,
                                  max_new_tokens=max_new, min_new_tokens=min_new, eos_token_id=eos_ids,
                                  pad_token_id=eos_ids[0], do_sample=False)
        prompt = encoded["input_ids"].shape[1]
        out += [cut_at_eos(row, eos_ids) for row in rows[:, prompt:].tolist()]
    return out


def dsee_generate(dsee, work, folder, case=None, eos_ids=None, extra=(), ids=True, input_file=None):
    """Runs dsee generate; returns (completed process, output lines)."""
    out = work / "hyps.txt"
    if out.exists():
        out.unlink()
    args = [dsee, "generate", "--model", str(folder), "--input", str(input_file or work / "contexts.txt"),
            "--out", str(out)]
    if case is not None:
        beam, penalty, ngram, max_new, min_new, batch = case
        args += ["--beam", str(beam), "--length-penalty", str(penalty), "--no-repeat-ngram", str(ngram),
                 "--max-new-tokens", str(max_new), "--min-new-tokens", str(min_new), "--batch-size", str(batch)]
    if eos_ids is not None:
        args += ["--eos", ",".join(map(str, eos_ids))]
    if ids:
        args.append("--ids")
    result = subprocess.run(args + list(extra), capture_output=True, text=True)
    lines = out.read_text(encoding="utf-8").splitlines() if result.returncode == 0 else []
    return result, lines


def dsee_tokens(dsee, work, folder, case, eos_ids):
    result, lines = dsee_generate(dsee, work, folder, case, eos_ids)
    check(f"dsee generate exits 0 ({' '.join(result.args[2:])})", result.returncode == 0, result.stderr)
    return [json.loads(line) for line in lines]


@pytest.mark.parametrize("name", list(CASES))
def test_generate_matches_transformers(dsee, setup, name):
    work, folder, tokenizer, model, eos_ids = setup
    expected = reference(model, tokenizer, CONTEXTS, CASES[name], eos_ids)
    got = dsee_tokens(dsee, work, folder, CASES[name], eos_ids)
    check_equal(f"{name}: contexts decoded", len(got), len(CONTEXTS))
    for i, (a, e) in enumerate(zip(got, expected)):
        check_equal(f"{name}: context {i} new tokens", a, e)


def test_the_cases_exercise_the_search(setup):
    """The reference outputs of the cases differ where an option matters, so
    a search that ignored it would fail test_generate_matches_transformers."""
    work, folder, tokenizer, model, eos_ids = setup
    out = {name: reference(model, tokenizer, CONTEXTS, case, eos_ids) for name, case in CASES.items()}
    check("beam 10 differs from greedy", out["beam10-lp0.8-no-ngram-batched"] != reference(
        model, tokenizer, CONTEXTS, (1, 1.0, 0, 24, 0, 3), eos_ids))
    check("beam 10 differs from beam 4", out["beam10-lp0.8-ngram4-batched"] != reference(
        model, tokenizer, CONTEXTS, (4, 0.8, 4, 24, 0, 3), eos_ids))
    check("no_repeat_ngram_size 4 changes greedy", out["greedy-batched-ngram"] != reference(
        model, tokenizer, CONTEXTS, (1, 1.0, 0, 20, 0, 3), eos_ids))
    check("no_repeat_ngram_size 4 changes beam 10", out["beam10-lp0.8-ngram4-batched"] !=
          out["beam10-lp0.8-no-ngram-batched"])
    check("min_new_tokens 6 changes beam 10", out["beam10-lp0.9-min6-batched"] != reference(
        model, tokenizer, CONTEXTS, (10, 0.9, 4, 24, 0, 3), eos_ids))
    check("length penalty 0.8 vs 2.0 changes beam 10", out["beam10-lp0.8-ngram4-batched"] != reference(
        model, tokenizer, CONTEXTS, (10, 2.0, 4, 24, 0, 3), eos_ids))
    endings = [row[-1] for rows in out.values() for row in rows]
    lengths = [len(row) for rows in out.values() for row in rows]
    check("some hypotheses end with the first eos id", endings.count(eos_ids[0]) > 0)
    check("some hypotheses end with the second eos id", endings.count(eos_ids[1]) > 0)
    check("some hypotheses run to max_new_tokens", max(lengths) >= 16 and any(e not in eos_ids for e in endings))
    check("min_new_tokens holds in the reference", all(len(row) >= 6 for row in out["beam10-lp0.9-min6-batched"]))


def test_lora_generate_matches_peft(parity, setup):
    """A LoRA update attached to dsee's model (c_attn, rank 4) decodes as the PEFT model with the same adapters."""
    from peft import LoraConfig, TaskType, get_peft_model
    work, folder, tokenizer, model, eos_ids = setup
    peft_model = get_peft_model(
        model, LoraConfig(task_type=TaskType.CAUSAL_LM, r=4, lora_alpha=8, target_modules=["c_attn"],
                          fan_in_fan_out=True, lora_dropout=0.0)).eval()
    try:
        ab = draw_lora(peft_model, "transformer.", torch.Generator().manual_seed(5))
        copy_lora(peft_model, "transformer.", ab)
        for beam, penalty, ngram, batch in [(10, 0.8, 4, 3), (1, 1.0, 0, 3)]:
            case = (beam, penalty, ngram, 24, 0, batch)
            prompts = [tokenizer.encode(c) for c in CONTEXTS[:batch]]
            expected = reference(peft_model, tokenizer, CONTEXTS[:batch], case, eos_ids)
            request = {"model": str(folder), "recipe": lora_recipe(4, 8, ["c_attn"]), "prompts": prompts,
                       "beam": beam, "length_penalty": penalty, "no_repeat_ngram": ngram, "max_new_tokens": 24,
                       "eos": eos_ids}
            got = parity("lora-generate", request, lora_tensors(ab)).json["tokens"]
            check_equal(f"LoRA beam {beam}: new tokens", got, expected)
            with peft_model.disable_adapter():
                base = reference(peft_model, tokenizer, CONTEXTS[:batch], case, eos_ids)
            check(f"LoRA beam {beam}: the update changes the output", base != expected)
    finally:
        peft_model.unload()


def test_run_model_decodes_as_its_export(dsee, setup, tmp_path):
    """`dsee generate --run` decodes a finished run's model (pretrained +
    trained LoRA update, rebuilt as `dsee export` rebuilds it) with the tokens
    transformers generates from the run's `dsee export --format hf` folder."""
    work, folder, tokenizer, model, eos_ids = setup
    rng = random.Random(1)
    for name, count in [("train.txt", 24), ("valid.txt", 4)]:
        rows = []
        for _ in range(count):
            restaurant, food, area = rng.choice(NAMES), rng.choice(FOODS), rng.choice(AREAS)
            rows.append(f"name : {restaurant} | food : {food} | area : {area}||"
                        f"{restaurant} serves {food} food in the {area} .")
        (tmp_path / name).write_text("\n".join(rows) + "\n", encoding="utf-8")
    recipe = tmp_path / "e2e.toml"
    recipe.write_text(f"""[run]\nname = "g"\nout_dir = "{tmp_path / 'runs'}"\n[task]\nname = "e2e"\n"""
                      f"""data_dir = "{tmp_path}"\n[model]\npath = "{folder}"\n[tuning]\nmethod = "lora"\n"""
                      f"""rank = 2\n[train]\nlr = 0.3\nepochs = 10\n""")
    run_dir = tmp_path / "runs" / "g"
    for args in [["run", str(recipe)], ["export", str(run_dir), "--format", "hf", "--out", str(tmp_path / "hf")]]:
        result = subprocess.run([dsee] + args, capture_output=True, text=True)
        check(f"dsee {args[0]} exits 0", result.returncode == 0, result.stderr[-3000:])
    case = (4, 0.8, 4, 20, 0, 3)
    exported = transformers.GPT2LMHeadModel.from_pretrained(str(tmp_path / "hf")).eval()
    expected = reference(exported, tokenizer, CONTEXTS, case, eos_ids)
    result, lines = dsee_generate(dsee, work, folder, case, eos_ids, extra=["--run", str(run_dir)])
    check("dsee generate --run exits 0", result.returncode == 0, result.stderr)
    check_equal("--run: new tokens", [json.loads(line) for line in lines], expected)
    check("--run: the trained update changes the output",
          expected != reference(model, tokenizer, CONTEXTS, case, eos_ids))


def test_default_eos_and_text_output(dsee, setup):
    """Without --eos dsee stops at config.json's eos_token_id ("\\n\\n" is not
    one token in this vocabulary); the text output is the decoded tokens
    before the eos, stripped."""
    work, folder, tokenizer, model, eos_ids = setup
    case = (4, 0.8, 4, 20, 0, 3)
    expected = reference(model, tokenizer, CONTEXTS, case, [EOS])
    result, lines = dsee_generate(dsee, work, folder, case, ids=False)
    check("dsee generate (text, default eos) exits 0", result.returncode == 0, result.stderr)
    check("a progress line on stderr", "7/7 contexts" in result.stderr and "tokens/s" in result.stderr,
          result.stderr)
    texts = []
    for row in expected:
        text = tokenizer.decode(row[:-1] if row and row[-1] == EOS else row)
        texts.append(" ".join(text.split("\n\n")[0].split("\n")).strip(" \t"))
    check_equal("text lines", lines, texts)


def test_errors_exit_non_zero(dsee, setup, tmp_path):
    work, folder, tokenizer, model, eos_ids = setup
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text("name : Zizzi\n\nThe\n")
    bert = tmp_path / "bert"
    transformers.BertModel(transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=40)).save_pretrained(
        str(bert))
    cases = [
        ("missing input", dict(input_file=tmp_path / "nope.txt"), "does not exist"),
        ("empty input", dict(input_file=empty), "is empty"),
        ("empty context line", dict(input_file=blank), "line 2: the context is empty"),
        ("not GPT-2", dict(folder=bert), "needs a GPT-2 model"),
        ("bad --eos", dict(extra=["--eos", "0,x"]), "is not a token id"),
        ("eos outside the vocabulary", dict(extra=["--eos", "100000"]), "outside the model's vocabulary"),
        ("beam 0", dict(extra=["--beam", "0"]), "beam size must be at least 1"),
        ("too many new tokens", dict(extra=["--max-new-tokens", "500"]), "--max-new-tokens must be in"),
    ]
    for name, kwargs, message in cases:
        args = dict(folder=folder)
        args.update(kwargs)
        result, _ = dsee_generate(dsee, work, args.pop("folder"), **args)
        check(f"{name}: exits non-zero", result.returncode != 0, result.stderr)
        check(f"{name}: says '{message}'", message in result.stderr, result.stderr)
        check(f"{name}: writes no output", not (work / "hyps.txt").exists())

"""Parity of dsee's BERT, RoBERTa and GPT-2 with transformers.

Each case builds a random model with transformers (eager attention) from a
small config chosen to catch a class of bug (odd head count, head size not a
power of two, pruned heads, padding, token type ids, a sequence at the last
position, fp16/bf16 checkpoints, names with and without the family prefix,
sharded checkpoints),
writes it as a Hugging Face folder, runs `dsee forward` on a ragged batch and
compares logits / last_hidden_state with transformers' outputs.

Tolerance: max |dsee - ref| / max |ref| <= 1e-5 per tensor (fp32, CPU);
the bf16 group runs dsee in bf16 against the fp32 reference (see CASES["bf16"]).

transformers 5 has no head pruning, so a pruned checkpoint is made here: the
full model's attention-output columns of the removed heads are zeroed for the
reference (a head contributes to the output only through those columns), and
the checkpoint holds the sliced query/key/value rows and output columns with
`pruned_heads` in config.json.

On CUDA (DSEE_PARITY_DEVICE=cuda; skipped where torch sees no GPU), both
stacks run on the GPU with TF32 off (torch's default for matmul; set here
explicitly for the reference), so fp32 is cuBLAS/cuDNN fp32 on both sides and
the same 1e-5 bound applies: the kernels differ from the CPU's only in
summation order (~1e-7 relative per reduction at these sizes).

Tests: test_forward (the small groups: bert, roberta, gpt2, bf16),
test_forward_full_size (BERT-base and GPT-2-small dimensions), test_round_trip
(dsee loads and saves, transformers loads what dsee wrote).
"""
import json
import os
import shutil
import subprocess

import pytest
import torch
from safetensors.torch import load_file, save_file

import transformers

from harness import check, check_close, check_equal

TOLERANCE = 1e-5
DEVICE = os.environ.get("DSEE_PARITY_DEVICE", "cpu")


@pytest.fixture(autouse=True, scope="module")
def device():
    """The device both stacks run on; CUDA runs skip without a GPU and turn TF32 off."""
    if DEVICE == "cuda":
        if not torch.cuda.is_available():
            pytest.skip("DSEE_PARITY_DEVICE=cuda but torch sees no CUDA device")
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
        print(f"device: {torch.cuda.get_device_name(0)}, TF32 off")
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    return DEVICE


def ragged_ids(generator, lengths, low, high):
    return [torch.randint(low, high, (n,), generator=generator).tolist() for n in lengths]


def pad(lists, value):
    longest = max(len(x) for x in lists)
    ids = torch.full((len(lists), longest), value, dtype=torch.long)
    mask = torch.zeros((len(lists), longest), dtype=torch.long)
    for i, row in enumerate(lists):
        ids[i, : len(row)] = torch.tensor(row)
        mask[i, : len(row)] = 1
    return ids, mask


def head_slice(head, head_dim):
    return slice(head * head_dim, (head + 1) * head_dim)


def kept_index(num_heads, pruned, head_dim):
    return torch.tensor([h * head_dim + i for h in range(num_heads) if h not in pruned for i in range(head_dim)])


def prune_encoder(state, prefix, num_heads, head_dim, pruned_heads):
    """Zeroes removed heads' output columns (reference) and returns the sliced
    state dict (checkpoint)."""
    sliced = dict(state)
    for layer, heads in pruned_heads.items():
        p = f"{prefix}encoder.layer.{layer}.attention."
        for h in heads:
            state[p + "output.dense.weight"][:, head_slice(h, head_dim)] = 0
        keep = kept_index(num_heads, heads, head_dim)
        for name in ("query", "key", "value"):
            sliced[p + f"self.{name}.weight"] = state[p + f"self.{name}.weight"][keep].clone()
            sliced[p + f"self.{name}.bias"] = state[p + f"self.{name}.bias"][keep].clone()
        sliced[p + "output.dense.weight"] = state[p + "output.dense.weight"][:, keep].clone()
    return sliced


def prune_gpt2(state, prefix, hidden, num_heads, head_dim, pruned_heads):
    sliced = dict(state)
    for layer, heads in pruned_heads.items():
        p = f"{prefix}h.{layer}.attn."
        for h in heads:  # Conv1D weights are [in, out]: c_proj's input rows
            state[p + "c_proj.weight"][head_slice(h, head_dim), :] = 0
        keep = kept_index(num_heads, heads, head_dim)
        thirds = torch.cat([keep + i * hidden for i in range(3)])
        sliced[p + "c_attn.weight"] = state[p + "c_attn.weight"][:, thirds].clone()
        sliced[p + "c_attn.bias"] = state[p + "c_attn.bias"][thirds].clone()
        sliced[p + "c_proj.weight"] = state[p + "c_proj.weight"][keep, :].clone()
    return sliced


def build(case):
    family = case["family"]
    config_class = {"bert": transformers.BertConfig, "roberta": transformers.RobertaConfig,
                    "gpt2": transformers.GPT2Config}[family]
    config = config_class(**case["config"])
    config._attn_implementation = "eager"
    model_class = getattr(transformers, case["class"])
    torch.manual_seed(case["seed"])
    model = model_class(config).eval()
    # Non-trivial layer norms and biases (transformers initialises 1 and 0).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" in name or "ln_" in name or name.endswith("bias"):
                p.add_(torch.randn_like(p) * 0.1)
    return config, model


def write_case(case, work):
    """The model folder for dsee and the reference outputs."""
    config, model = build(case)
    folder = os.path.join(work, case["name"])
    shutil.rmtree(folder, ignore_errors=True)
    shutil.rmtree(folder + "_saved", ignore_errors=True)
    os.makedirs(folder)
    dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[case.get("checkpoint", "fp32")]
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    # The reference runs on what the checkpoint holds: rounded to its dtype.
    state = {k: v.to(dtype).to(torch.float32) for k, v in state.items()}
    prefix = model.base_model_prefix + "." if case["class"] not in ("BertModel", "RobertaModel") else ""
    pruned = case.get("pruned_heads", {})
    hidden = config.hidden_size
    head_dim = hidden // config.num_attention_heads
    sliced = state
    if pruned and case["family"] == "gpt2":
        sliced = prune_gpt2(state, prefix, hidden, config.num_attention_heads, head_dim, pruned)
    elif pruned:
        sliced = prune_encoder(state, prefix, config.num_attention_heads, head_dim, pruned)
    model.load_state_dict(state)
    if case.get("strip_prefix"):
        sliced = {(k[len(prefix):] if k.startswith(prefix) else k): v for k, v in sliced.items()}
    tied = [k for k in sliced if k == "lm_head.weight"]
    for k in tied:
        del sliced[k]
    tensors = {k: v.to(dtype).contiguous() for k, v in sliced.items()}
    if case.get("hf_save"):  # transformers' own writer, other heads' tensors included
        model.save_pretrained(folder)
    elif case.get("shards"):  # model-0000i-of-0000N.safetensors + model.safetensors.index.json
        names, count = sorted(tensors), case["shards"]
        weight_map = {}
        for i in range(count):
            file = f"model-{i + 1:05d}-of-{count:05d}.safetensors"
            part = {n: tensors[n] for n in names[i::count]}
            save_file(part, os.path.join(folder, file), metadata={"format": "pt"})
            weight_map.update({n: file for n in part})
        index = {"metadata": {"total_size": sum(t.numel() * t.element_size() for t in tensors.values())},
                 "weight_map": weight_map}
        with open(os.path.join(folder, "model.safetensors.index.json"), "w") as f:
            json.dump(index, f)
    else:
        save_file(tensors, os.path.join(folder, "model.safetensors"), metadata={"format": "pt"})
    if not case.get("hf_save"):
        config_json = config.to_dict()
        config_json["architectures"] = [case["class"]]
        if pruned:
            config_json["pruned_heads"] = {str(k): v for k, v in pruned.items()}
        with open(os.path.join(folder, "config.json"), "w") as f:
            json.dump(config_json, f, indent=2)

    generator = torch.Generator().manual_seed(case["seed"] + 1)
    low = 2 if case["family"] == "roberta" else 0
    lists = ragged_ids(generator, case["lengths"], low, config.vocab_size)
    request = {"input_ids": lists}
    pad_id = config.pad_token_id if config.pad_token_id is not None else 0
    ids, mask = pad(lists, pad_id)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if case.get("token_types"):
        types = [[int(t) for t in torch.randint(0, config.type_vocab_size, (n,), generator=generator)]
                 for n in case["lengths"]]
        request["token_type_ids"] = types
        kwargs["token_type_ids"] = pad(types, 0)[0]
    with open(os.path.join(folder, "ids.json"), "w") as f:
        json.dump(request if case.get("token_types") or case.get("object_form") else lists, f)
    model.to(DEVICE)
    kwargs = {k: v.to(DEVICE) for k, v in kwargs.items()}
    with torch.no_grad():
        out = model(**kwargs)
        base = getattr(model, model.base_model_prefix, model)
        base_out = base(**kwargs)
        reference = {"last_hidden_state": base_out.last_hidden_state.cpu()}
        if hasattr(out, "logits") and case.get("head", True):
            reference["logits"] = out.logits.cpu()
        if case["family"] == "bert" and base_out.pooler_output is not None:
            reference["pooler_output"] = base_out.pooler_output.cpu()
    return folder, reference, mask


def run_case(dsee, case, work):
    folder, reference, mask = write_case(case, work)
    out = os.path.join(folder, "out.safetensors")
    result = subprocess.run([dsee, "forward", "--model", folder, "--input-ids", os.path.join(folder, "ids.json"),
                             "--out", out, "--dtype", case.get("dtype", "fp32"), "--device", DEVICE],
                            capture_output=True, text=True)
    check(f"{case['name']}: dsee forward exits 0", result.returncode == 0,
          f"{result.returncode}: {result.stderr.strip()}")
    ours = load_file(out)
    check(f"{case['name']}: attention mask", torch.equal(ours["attention_mask"], mask))
    check_equal(f"{case['name']}: dsee's outputs", sorted(ours), sorted(list(reference) + ["attention_mask"]))
    for key, expected in reference.items():
        check_close(f"{case['name']} {key}", ours[key], expected, rel=case.get("tolerance", TOLERANCE))


def bert_config(**kw):
    base = dict(vocab_size=99, hidden_size=45, num_hidden_layers=2, num_attention_heads=3, intermediate_size=37,
                max_position_embeddings=16, type_vocab_size=2, hidden_act="gelu", layer_norm_eps=1e-12)
    base.update(kw)
    return base


def gpt2_config(**kw):
    base = dict(vocab_size=101, n_embd=39, n_layer=2, n_head=3, n_positions=12, activation_function="gelu_new",
                layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0)
    base.update(kw)
    return base


CASES = {
    "bert": [
        # 3 heads of 15, classification, token types, one sequence at position 16.
        dict(name="bert_odd_heads", family="bert", class_="BertForSequenceClassification", seed=1,
             config=bert_config(num_labels=3), lengths=[16, 5, 11], token_types=True),
        # Per-layer head counts from pruned_heads; regression head; bf16 checkpoint.
        dict(name="bert_pruned_regression_bf16", family="bert", class_="BertForSequenceClassification", seed=2,
             config=bert_config(hidden_size=48, num_attention_heads=4, num_hidden_layers=3, num_labels=1,
                                problem_type="regression"),
             pruned_heads={0: [1], 2: [0, 3]}, checkpoint="bf16", lengths=[7, 3]),
        # BertModel: no prefix, no head (pooler output), head size 7, fp16 checkpoint.
        # A masked-LM folder as transformers writes it: dsee builds BertModel,
        # skips cls.* and has no pooler output (the checkpoint has no pooler).
        dict(name="bert_masked_lm_hf_saved", family="bert", class_="BertForMaskedLM", seed=11, config=bert_config(),
             hf_save=True, head=False, lengths=[6, 3]),
        dict(name="bert_base_model_fp16", family="bert", class_="BertModel", seed=3,
             config=bert_config(hidden_size=35, num_attention_heads=5, intermediate_size=64), checkpoint="fp16",
             lengths=[4, 9, 1], object_form=True),
    ],
    "roberta": [
        # 3 heads of 14; positions from pad + 1: 18 tokens reach position 19 of 20.
        dict(name="roberta_odd_heads", family="roberta", class_="RobertaForSequenceClassification", seed=4,
             config=bert_config(hidden_size=42, max_position_embeddings=20, type_vocab_size=1, pad_token_id=1,
                                num_labels=2),
             lengths=[18, 6, 2]),
        dict(name="roberta_masked_lm_hf_saved", family="roberta", class_="RobertaForMaskedLM", seed=12,
             config=bert_config(max_position_embeddings=20, type_vocab_size=1, pad_token_id=1), hf_save=True,
             head=False, lengths=[4, 8]),
        dict(name="roberta_pruned_4_labels", family="roberta", class_="RobertaForSequenceClassification", seed=5,
             config=bert_config(hidden_size=40, num_attention_heads=5, max_position_embeddings=20, type_vocab_size=1,
                                pad_token_id=1, num_labels=4, layer_norm_eps=1e-5),
             pruned_heads={1: [0, 2, 4]}, lengths=[9, 12], shards=2),
    ],
    "gpt2": [
        # 3 heads of 13, a sequence at the last position (12), padding.
        dict(name="gpt2_odd_heads", family="gpt2", class_="GPT2LMHeadModel", seed=6, config=gpt2_config(),
             lengths=[12, 4, 7]),
        # Pruned heads, 1/(layer+1) scaling, names without "transformer.", fp16.
        dict(name="gpt2_pruned_fp16_bare", family="gpt2", class_="GPT2LMHeadModel", seed=7,
             config=gpt2_config(n_embd=48, n_head=4, n_layer=3, scale_attn_by_inverse_layer_idx=True),
             pruned_heads={0: [2], 2: [0, 1, 3]}, checkpoint="fp16", strip_prefix=True, lengths=[5, 9]),
        dict(name="gpt2_unscaled_inner", family="gpt2", class_="GPT2LMHeadModel", seed=8,
             config=gpt2_config(scale_attn_weights=False, n_inner=50, n_embd=30, n_head=5), lengths=[6], shards=3),
    ],
    "full_size": [
        dict(name="bert_base_dims", family="bert", class_="BertForSequenceClassification", seed=9,
             config=dict(vocab_size=30522, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                         intermediate_size=3072, max_position_embeddings=512, type_vocab_size=2, hidden_act="gelu",
                         layer_norm_eps=1e-12, num_labels=2),
             lengths=[12, 7], token_types=True),
        dict(name="gpt2_small_dims", family="gpt2", class_="GPT2LMHeadModel", seed=10,
             config=dict(vocab_size=50257, n_embd=768, n_layer=12, n_head=12, n_positions=1024,
                         activation_function="gelu_new", layer_norm_epsilon=1e-5, bos_token_id=50256,
                         eos_token_id=50256),
             lengths=[10, 6]),
    ],
}
# bf16 compute (weights and activations; layer norm and softmax accumulate in
# fp32 inside the kernels) against the fp32 reference: bf16 keeps 8 bits of
# mantissa (relative rounding 2^-9 ≈ 2e-3 per operation), which a few layers
# compound to the 1e-2 range; 5e-2 catches real bugs (wrong weights, masks or
# positions give errors of order 1).
CASES["bf16"] = [dict(c, name=c["name"] + "_bf16_compute", dtype="bf16", tolerance=5e-2)
                 for c in (CASES["bert"][0], CASES["roberta"][0], CASES["gpt2"][0])]
for group in CASES.values():
    for c in group:
        c["class"] = c.pop("class_")


def case_ids(cases):
    return [c["name"] for c in cases]


SMALL = CASES["bert"] + CASES["roberta"] + CASES["gpt2"] + CASES["bf16"]


@pytest.mark.parametrize("case", SMALL, ids=case_ids(SMALL))
def test_forward(case, dsee, tmp_path):
    run_case(dsee, case, str(tmp_path))


@pytest.mark.parametrize("case", CASES["full_size"], ids=case_ids(CASES["full_size"]))
def test_forward_full_size(case, dsee, tmp_path):
    run_case(dsee, case, str(tmp_path))


ROUND_TRIP = [CASES["bert"][0], CASES["roberta"][0], CASES["gpt2"][0]]


@pytest.mark.parametrize("case", ROUND_TRIP, ids=case_ids(ROUND_TRIP))
def test_round_trip(case, parity, tmp_path):
    """dsee loads and saves; transformers loads what dsee wrote: same logits."""
    folder, reference, _ = write_case(dict(case, name=case["name"] + "_rt"), str(tmp_path))
    saved = folder + "_saved"
    parity("model-resave", {"model": folder, "save_to": saved})
    model = getattr(transformers, case["class"]).from_pretrained(saved, attn_implementation="eager").eval()
    with open(os.path.join(folder, "ids.json")) as f:
        request = json.load(f)
    lists = request["input_ids"] if isinstance(request, dict) else request
    config = model.config
    ids, mask = pad(lists, config.pad_token_id if config.pad_token_id is not None else 0)
    kwargs = {"input_ids": ids, "attention_mask": mask}
    if isinstance(request, dict) and "token_type_ids" in request:
        kwargs["token_type_ids"] = pad(request["token_type_ids"], 0)[0]
    with torch.no_grad():
        logits = model(**kwargs).logits
    check_close(f"{case['name']} round trip logits", logits, reference["logits"], rel=1e-6)

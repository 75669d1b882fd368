"""Parity of the in-place baselines (core/tuning/tuning.h, methods bitfit and
top_k) with transformers.

  trainable  A tiny random transformers model (torch seed 0; BERT with a
             classification head and padding, RoBERTa with its two-layer
             head classifier.dense + out_proj, GPT-2 with its tied LM head) is
             saved and loaded by dsee_parity's lora-step with tuning.method =
             bitfit, or top_k with tuning.top_layers = 1 (the models have 2
             layers). The tensors dsee trains must be exactly
               bitfit: the parameters transformers lists whose names end in
                       ".bias", plus the task head (its weights too);
               top_k:  the parameters of the top layer, plus the task head
                       (BERT, RoBERTa) or ln_f (GPT-2),
             named without the "bert." / "roberta." / "transformer." prefix. One forward
             on the same ids, loss = (logits * fixed weights).sum(): logits and
             the gradient of every trainable tensor within 1e-5 (max |diff| /
             max |ref|) of transformers' autograd with requires_grad set on
             those tensors only (GPT-2 Conv1D weights compared transposed:
             dsee keeps them [out, in]; the key biases, whose gradient is
             zero in exact arithmetic, within 1e-9 absolute).
  counts     BERT-base's bitfit and top_k (k = 2) trainable counts, which
             the unit tests assert for dsee, from transformers' parameters.
  export     `dsee run` of a tiny demo recipe with arms bitfit and top_k (one
             epoch, export.format = hf). transformers'
             AutoModelForSequenceClassification on each arm's export gives the
             logits dsee's eval stage recorded (predictions-dev.safetensors)
             within 1e-5; every exported tensor equals the trained one
             (trainable-train.safetensors) where the method trains it and the
             pretrained one, bit for bit, where it does not.
"""
import os

import pytest
import torch
import transformers
from safetensors.torch import load_file

from harness import check, check_close, check_equal
from harness.lora import lora_case, model_inputs
from harness.runs import recipe_text, run_recipe_file

TOLERANCE = 1e-5
CONV1D = ("attn.c_attn.weight", "attn.c_proj.weight", "mlp.c_fc.weight", "mlp.c_proj.weight")


def trains(method, family, name):
    """Whether `method` trains the parameter `name` (dsee's name, no prefix) of the 2-layer model."""
    head = name.startswith("classifier.")
    if method == "bitfit":
        return head or name.endswith(".bias")
    top = "encoder.layer.1." if family != "gpt2" else "h.1."
    return head or name.startswith(top) or name.startswith("ln_f.")


@pytest.mark.parametrize("method", ["bitfit", "top_k"])
@pytest.mark.parametrize("family", ["bert", "roberta", "gpt2"])
def test_trainable_set_and_gradients(family, method, parity, tmp_path):
    case = lora_case(family, "eager")
    torch.manual_seed(0)
    model = case.make_model()
    folder = os.path.join(tmp_path, family)
    model.save_pretrained(folder)

    # transformers' parameters by dsee's name (tied lm_head listed once, as wte).
    params = {name[len(case.prefix):] if name.startswith(case.prefix) else name: p
              for name, p in model.named_parameters()}
    expected = sorted(name for name in params if trains(method, family, name))
    if method == "bitfit":
        biases = sorted(name for name in params if name.endswith(".bias"))
        check(f"{family} bitfit: every *.bias transformers lists is expected", set(biases) <= set(expected),
              f"{biases}")
    for name, p in params.items():
        p.requires_grad_(name in expected)
    kwargs = model_inputs(case)
    logits = model(**kwargs).logits
    weights = torch.randn(logits.shape, generator=torch.Generator().manual_seed(5))
    (logits * weights).sum().backward()

    tuning = {"method": method} if method == "bitfit" else {"method": method, "top_layers": 1}
    result = parity("lora-step", {"model": folder, "recipe": recipe_text({"tuning": tuning})},
                    {**kwargs, "loss_weights": weights}, out=True)
    out = result.tensors
    check_equal(f"{family} {method}: trainable tensors, dsee vs transformers", sorted(result.json["trainable_dtype"]),
                expected)
    check_close(f"{family} {method} logits", out["logits"], logits.detach(), rel=TOLERANCE, reference="transformers")
    for name in expected:
        grad = params[name].grad
        if family == "gpt2" and name.endswith(CONV1D):
            grad = grad.t()
        if name.endswith("attention.self.key.bias"):
            # q·(k + b) shifts every score of a query by q·b: softmax cancels it, so this gradient is 0 up to
            # rounding (|g| ~ 1e-12 on both sides) and only an absolute bound means anything.
            check_close(f"{family} {method} {name} grad (zero)", out[name + ".grad"], grad, abs=1e-9,
                        reference="transformers")
            continue
        check_close(f"{family} {method} {name} grad", out[name + ".grad"], grad, rel=TOLERANCE,
                    reference="transformers")


def test_bert_base_counts_match_transformers():
    """The BERT-base numbers tests/unit/test_counting.cpp asserts for dsee's
    count (TrainableCount.BertBaseBitfitAndTopKByHand), from transformers'
    own parameter list (on the meta device: shapes only)."""
    with torch.device("meta"):
        model = transformers.BertForSequenceClassification(transformers.BertConfig(num_labels=2))
    params = dict(model.named_parameters())
    bitfit = sum(p.numel() for n, p in params.items() if n.endswith(".bias") or n.startswith("classifier."))
    top2 = sum(p.numel() for n, p in params.items()
               if n.startswith(("bert.encoder.layer.10.", "bert.encoder.layer.11.", "classifier.")))
    check_equal("BERT-base bitfit trainable parameters", bitfit, 104450)
    check_equal("BERT-base top_k (k = 2) trainable parameters", top2, 14177282)


@pytest.fixture(scope="module")
def run(dsee, tmp_path_factory):
    """The two arms' run folder."""
    work = str(tmp_path_factory.mktemp("baselines"))
    recipe = os.path.join(work, "baselines.toml")
    with open(recipe, "w") as f:
        f.write(f"""[run]
name = "base"
out_dir = "{work}"
compare = ["bitfit: tuning.method=bitfit", "top_k: tuning.method=top_k tuning.top_layers=1 train.lr=3e-3"]
[task]
train_size = 128
dev_size = 64
[train]
lr = 1e-2
epochs = 1
batch_size = 32
[export]
format = "hf"
""")
    run_recipe_file(dsee, recipe, "the two arms")
    return os.path.join(work, "base")


@pytest.mark.parametrize("arm", ["bitfit", "top_k"])
def test_hf_export_gives_dsee_logits(arm, run):
    arm_dir = os.path.join(run, arm)
    dev = load_file(os.path.join(run, "data", "dev.safetensors"))
    exported = transformers.AutoModelForSequenceClassification.from_pretrained(
        os.path.join(arm_dir, "export"), attn_implementation="eager").eval()
    with torch.no_grad():
        logits = exported(input_ids=dev["input_ids"]).logits
    own = load_file(os.path.join(arm_dir, "predictions-dev.safetensors"))["dev.logits"]
    check_close(f"{arm}: hf export logits vs dsee's eval logits", logits, own, rel=TOLERANCE, reference="dsee")

    pretrained = load_file(os.path.join(run, "data", "pretrained", "model.safetensors"))
    exported_tensors = load_file(os.path.join(arm_dir, "export", "model.safetensors"))
    trained = load_file(os.path.join(arm_dir, "trainable-train.safetensors"))
    prefix = exported.base_model_prefix + "."
    family = "bert" if exported.config.model_type != "gpt2" else "gpt2"
    changed = []
    for name, tensor in exported_tensors.items():
        short = name[len(prefix):] if name.startswith(prefix) else name
        if trains(arm, family, short):
            check_equal(f"{arm}: exported {name} is the trained tensor", tensor, trained[short])
        elif name in pretrained and not torch.equal(tensor, pretrained[name]):
            changed.append(name)
    check(f"{arm}: tensors the method does not train are the pretrained ones", not changed, f"changed: {changed}")
    check(f"{arm}: trained tensors are the method's", sorted(trained) == sorted(
        n for n in trained if trains(arm, family, n)), f"{sorted(trained)}")

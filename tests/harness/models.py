"""Tiny random models and trained vocabularies for the Python tests.

The models are made by transformers (random weights from torch's global
generator: seed it first) and saved with save_pretrained; the vocabularies
are trained by the `tokenizers` library on a corpus the test writes. Each
test still picks its own sizes and seeds: its bounds were measured on those.
"""
import os
import shutil

import transformers


# The LoRA parity models (test_tuning_peft.py, test_precision_peft.py,
# test_lora_training_peft.py): dropout off; `extra` adds config fields
# (attn_implementation, classifier_dropout, ...).
def bert_config(**extra):
    return transformers.BertConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=3, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        **extra)


def roberta_config(**extra):
    return transformers.RobertaConfig(
        vocab_size=60, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=40,
        max_position_embeddings=24, num_labels=2, pad_token_id=1, hidden_dropout_prob=0.0,
        attention_probs_dropout_prob=0.0, **extra)


def gpt2_config(**extra):
    return transformers.GPT2Config(
        vocab_size=50, n_embd=32, n_layer=2, n_head=4, n_positions=24, resid_pdrop=0.0, embd_pdrop=0.0,
        attn_pdrop=0.0, bos_token_id=0, eos_token_id=0, **extra)


def wordpiece_vocabulary(corpus_file, folder, lowercase=True, **train_options):
    """A WordPiece vocabulary trained on `corpus_file` (BertWordPieceTokenizer,
    `train_options` passed to its train()), saved as folder/vocab.txt."""
    from tokenizers import BertWordPieceTokenizer
    tokenizer = BertWordPieceTokenizer(lowercase=lowercase)
    tokenizer.train([corpus_file], **train_options)
    os.makedirs(folder, exist_ok=True)
    tokenizer.save_model(folder)
    return folder


def byte_level_bpe_vocabulary(corpus_file, folder, **train_options):
    """A byte-level BPE vocabulary (ByteLevelBPETokenizer) trained on
    `corpus_file`, saved as folder/vocab.json + merges.txt."""
    from tokenizers import ByteLevelBPETokenizer
    tokenizer = ByteLevelBPETokenizer()
    tokenizer.train([corpus_file], **train_options)
    os.makedirs(folder, exist_ok=True)
    tokenizer.save_model(folder)
    return folder


def gpt2_bpe_tokenizer(corpus_file, folder, vocab_size):
    """A GPT-2-style tokenizer folder: a byte-level BPE trained on `corpus_file`
    with <|endoftext|> as its first token (id 0), vocab.json + merges.txt and a
    tokenizer_config.json naming GPT2Tokenizer, in `folder` (made). Returns
    transformers' GPT2TokenizerFast for it."""
    import json
    from tokenizers import ByteLevelBPETokenizer
    bpe = ByteLevelBPETokenizer()
    bpe.train([str(corpus_file)], vocab_size=vocab_size, min_frequency=2, special_tokens=["<|endoftext|>"])
    os.makedirs(folder, exist_ok=True)
    bpe.save_model(str(folder))
    with open(os.path.join(folder, "tokenizer_config.json"), "w") as f:
        json.dump({"tokenizer_class": "GPT2Tokenizer"}, f)
    return transformers.GPT2TokenizerFast.from_pretrained(str(folder))


def tiny_bert_for_vocabulary(folder):
    """A random BertModel (hidden 32, 2 layers, 4 heads, intermediate 48, 64
    positions; torch seed 0) sized to folder/vocab.txt, saved into `folder`
    beside the vocabulary: a model folder `dsee run` can tokenize and train."""
    import torch
    with open(os.path.join(folder, "vocab.txt"), encoding="utf-8") as f:
        vocab_size = sum(1 for _ in f)
    torch.manual_seed(0)
    config = transformers.BertConfig(vocab_size=vocab_size, hidden_size=32, num_hidden_layers=2,
                                     num_attention_heads=4, intermediate_size=48, max_position_embeddings=64)
    transformers.BertModel(config).save_pretrained(folder, safe_serialization=True)
    return folder


def copy_files(source, folder):
    """Copies every file of `source` into `folder` (a vocabulary next to a model)."""
    os.makedirs(folder, exist_ok=True)
    for name in os.listdir(source):
        shutil.copyfile(os.path.join(source, name), os.path.join(folder, name))

#include "recipes/recipe_schema.h"

namespace dsee {

const ConfigSchema& recipe_schema() {
  static const ConfigSchema schema = [] {
    ConfigSchema s;
    s.add({"run.name", std::string("run"), "Name of the run; the run directory is run.out_dir/run.name"});
    s.add({"run.out_dir", std::string("runs"), "Where run directories are created"});
    s.add({"run.seed", std::int64_t{42}, "Seed for model init, dropout and data order", 0.0});
    s.add({"run.device",
           std::string("auto"),
           "Where dsee run trains: auto (a GPU when one is usable, else the CPU), cpu or cuda (an error without "
           "a GPU). Under mpirun each rank takes GPU local_rank % GPUs per node",
           {},
           {},
           {"auto", "cpu", "cuda"}});
    s.add({"run.precision",
           std::string("fp32"),
           "bf16: frozen pretrained weights stored and multiplied in bf16, trainable tensors and AdamW state in fp32 "
           "(docs/precision.md; not with tuning.method full, bitfit, top_k or prefix)",
           {},
           {},
           {"fp32", "bf16"}});
    s.add({"run.checkpoint_on_signal", true,
           "SIGTERM/SIGINT/SIGUSR1 (Slurm pre-emption) stop training at the next step boundary (exit 128 + signal); "
           "true: write a checkpoint first, so a requeued job resumes from there; false: resume from the last "
           "periodic one"});
    s.add({"run.stages", std::vector<std::string>{},
           "Stages this invocation runs, in pipeline order (omega, train, prune, retune, eval, export); earlier "
           "stages must have run in the run directory; not part of the recorded recipe, so a run can go stage by "
           "stage; empty: every stage the recipe configures"});
    s.add({"run.compare", std::vector<std::string>{},
           "Arms run side by side and tabulated, each \"name: key=value key=value ...\" over this recipe "
           "(recipes/demo.toml); the arms share the task and its data, so task.* keys in an arm are refused; "
           "empty: one run"});
    s.add({"run.compare_seeds", std::int64_t{1},
           "run.compare: seeds per arm (run.seed, run.seed + 1, ...), each in <run>/<arm>-seed<k>; the table shows "
           "mean ± std (n) over them; 1: one run per arm in <run>/<arm>",
           1.0, 100.0});
    s.add({"run.lock", true,
           "Hold an exclusive flock on RUN_DIR/.lock while dsee run (or dsee export into the run) works there, so a "
           "second process on the directory stops at once naming the first; false: for file systems without flock "
           "(docs/recipes.md, 'The run directory lock'); not part of the recorded recipe"});
    s.add({"paths.models", std::string("models"),
           "Folder holding the pretrained model folders; recipes refer to it as ${paths.models} (e.g. model.path = "
           "\"${paths.models}/bert-base-uncased\"), so one --set moves them all"});
    s.add({"paths.data", std::string("data"),
           "Folder holding the datasets; recipes refer to it as ${paths.data} (e.g. task.data_dir = "
           "\"${paths.data}/glue/SST-2\")"});
    s.add({"model.path", std::string(""),
           "Hugging Face model directory (config.json, model.safetensors); empty with task.name = demo: the demo's "
           "generated model"});
    s.add({"task.name",
           std::string("demo"),
           "The task; demo is the built-in synthetic task (data/demo_task.h); cola ... wnli GLUE tasks read from "
           "task.data_dir (data/glue.h); e2e, webnlg, dart data-to-text tasks for GPT-2 (docs/nlg-data.md)",
           {},
           {},
           {"demo", "cola", "sst2", "mrpc", "qqp", "stsb", "mnli", "qnli", "rte", "wnli", "e2e", "webnlg", "dart"}});
    s.add({"task.data_dir", std::string(""),
           "GLUE: the task's folder (train.tsv, dev.tsv; MNLI dev_matched.tsv, dev_mismatched.tsv)"});
    s.add({"task.train_file", std::string(""),
           "e2e/webnlg/dart: training file under task.data_dir; empty: train.txt (e2e), train.json (webnlg, dart)"});
    s.add({"task.dev_file", std::string(""),
           "e2e/webnlg/dart: dev file under task.data_dir, decoded and scored; empty: valid.txt (e2e), dev.json "
           "(webnlg, dart)"});
    s.add({"task.test_file", std::string(""),
           "e2e/webnlg/dart: test file under task.data_dir, in the formats of task.format; decoded and scored by the "
           "eval stage when eval.splits lists \"test\" (then required)"});
    s.add({"task.format",
           std::string("auto"),
           "e2e/webnlg/dart: the files' format (docs/nlg-data.md); auto: from the extension and content",
           {},
           {},
           {"auto", "e2e", "e2e-csv", "webnlg-json", "webnlg-xml", "dart", "jsonl"}});
    s.add({"task.max_seq_length", std::int64_t{128},
           "GLUE: tokens per input, special tokens included; pairs are truncated longest first; e2e/webnlg/dart: "
           "tokens per training sequence (context, eos, completion, eos), right-truncated",
           4.0});
    s.add({"task.train_size", std::int64_t{2048}, "demo: training sequences", 1.0});
    s.add({"task.dev_size", std::int64_t{512}, "demo: dev sequences", 1.0});
    s.add({"task.teacher_rank", std::int64_t{2}, "demo: rank of the teacher's planted low-rank update", 1.0});
    s.add({"task.teacher_lowrank_std", 0.05, "demo: entry standard deviation of the teacher's planted low-rank update",
           0.0});
    s.add({"task.teacher_sparse_scale", 0.5,
           "demo: magnitude of the teacher's planted sparse entries (±, on GreBsmo's Ω of the adapted matrices)", 0.0});
    s.add({"task.teacher_margin", 0.0,
           "demo: fraction of the drawn sequences nearest the teacher's decision boundary that are dropped (train "
           "and dev), so accuracy measures the learned update rather than ties at the boundary",
           0.0, 0.9});
    s.add({"tuning.method",
           std::string("dsee"),
           "dsee (low rank + sparse on Ω), lora, full fine-tuning, bitfit (every bias and the task head), top_k "
           "(the top tuning.top_layers layers and the task head), adapter (Houlsby bottleneck adapters, the "
           "layer norms and the task head), or prefix (prefix tuning / P-tuning v2: trainable key/value prefixes "
           "at every layer and the task head)",
           {},
           {},
           {"dsee", "lora", "full", "bitfit", "top_k", "adapter", "prefix"}});
    s.add({"tuning.rank", std::int64_t{16}, "r, the rank of B·A", 1.0});
    s.add({"tuning.top_layers", std::int64_t{2},
           "top_k: the layers counted from the top that train (all their tensors; GPT-2 also ln_f), at most the "
           "model's layers",
           1.0});
    s.add({"tuning.adapter_size", std::int64_t{64},
           "adapter: the bottleneck m of each adapter (Houlsby et al. use 8 … 256 on BERT); 2·d·m + m + d "
           "parameters per adapter, two per layer",
           1.0});
    s.add({"tuning.adapter_activation",
           std::string("gelu"),
           "adapter: the non-linearity between the down- and up-projection (gelu, as Houlsby et al.'s code)",
           {},
           {},
           {"gelu", "gelu_new", "relu"}});
    s.add({"tuning.adapter_train_layernorm", true,
           "adapter: every layer norm trains too (Houlsby et al.); false: only the adapters and the task head"});
    s.add({"tuning.prefix_length", std::int64_t{10},
           "prefix: L, the key/value prefix positions every attention layer gets (PEFT num_virtual_tokens); 0 is "
           "the base model",
           0.0});
    s.add({"tuning.prefix_projection", false,
           "prefix: the prefixes come from an L×hidden embedding through Linear, tanh, Linear (Li & Liang's "
           "reparameterisation, PEFT prefix_projection), merged into plain prefixes on export"});
    s.add({"tuning.prefix_hidden", std::int64_t{512},
           "prefix: the hidden width of the projection MLP (PEFT encoder_hidden_size); only with "
           "tuning.prefix_projection",
           1.0});
    s.add({"tuning.prefix_init",
           std::string("normal"),
           "prefix: normal draws the prefix embedding N(0, 1) and the projection's layers as torch.nn.Linear (PEFT's "
           "default); zero starts every prefix key and value at 0 (PEFT init_weights = \"zero\": the embedding, or "
           "the projection's last layer, is 0)",
           {},
           {},
           {"normal", "zero"}});
    s.add({"tuning.alpha", 32.0, "α; the update is scaled by α / r", 0.0});
    s.add({"tuning.dropout", 0.0, "Dropout on the update's input while training", 0.0, 1.0});
    s.add({"tuning.target_modules", std::vector<std::string>{},
           "Adapted projections by HF module-name pattern (suffix, re:REGEX, GPT-2 c_attn:q); empty: query and value"});
    s.add({"tuning.init_from", std::string(""),
           "A finished run directory whose final trainable tensors (trainable-retune or -train.safetensors) this "
           "run's update starts from; same tuning.method, rank and target_modules (dsee: same omega.* keys, and Ω "
           "is copied from it); task-head tensors of another shape start fresh; empty: a fresh update"});
    s.add({"omega.c", std::int64_t{16}, "Entries of the sparse update S per adapted matrix", 0.0});
    s.add({"omega.method",
           std::string("grebsmo"),
           "How Ω is chosen: largest entries of GreBsmo's S, of the weight's magnitude, uniformly at random, or of "
           "RoSA's accumulated squared gradients on the task (gradient: tuning.method dsee only)",
           {},
           {},
           {"grebsmo", "magnitude", "random", "gradient"}});
    s.add({"omega.variant", std::string("reference"), "GreBsmo variant", {}, {}, {"reference", "tolerance"}});
    s.add({"omega.max_rank", std::int64_t{0}, "GreBsmo rank cap; 0: the variant's default", 0.0});
    s.add({"omega.tol", 1e-3, "tolerance variant: relative change of the residual that stops it", 0.0});
    s.add({"omega.seed", std::int64_t{0}, "Seed of Ω's own generator", 0.0});
    s.add({"omega.gradient_steps", std::int64_t{1},
           "method gradient: training batches (train.batch_size each) whose squared full-weight gradients are summed",
           1.0});
    s.add({"omega.gradient_warmup_steps", std::int64_t{0},
           "method gradient: LoRA-only training steps before the gradients are taken (then discarded; RoSA: 64)", 0.0});
    s.add({"omega.workers", std::int64_t{1}, "Matrices computed concurrently", 1.0});
    s.add({"omega.split_across_ranks", false,
           "Under mpirun: every rank computes Ω of its share of the matrices and all are gathered (same Ω as one "
           "process); false: rank 0 computes all of them"});
    s.add({"train.lr", 2e-4, "Peak learning rate", 0.0, 1.0});
    s.add({"train.epochs", std::int64_t{5}, "Training epochs", 0.0});
    s.add({"train.max_steps", std::int64_t{0}, "Optimizer steps; > 0 overrides train.epochs", 0.0});
    s.add({"train.batch_size", std::int64_t{32}, "Global batch size (over all ranks)", 1.0});
    s.add({"train.grad_accumulation", std::int64_t{1}, "Micro-batches per optimizer step", 1.0});
    s.add({"train.weight_decay", 0.0, "AdamW decoupled weight decay", 0.0});
    s.add({"train.decay_exclude_bias_norm", true,
           "Keep biases and normalisation weights out of weight decay (the transformers Trainer's rule)"});
    s.add({"train.adam_beta1", 0.9, "AdamW β1", 0.0, 1.0});
    s.add({"train.adam_beta2", 0.999, "AdamW β2", 0.0, 1.0});
    s.add({"train.adam_epsilon", 1e-8, "AdamW ε, added to the root of the second moment (LoRA's GPT-2 recipes: 1e-6)",
           0.0});
    s.add(
        {"train.schedule", std::string("linear"), "Learning-rate schedule", {}, {}, {"linear", "constant", "cosine"}});
    s.add({"train.warmup_ratio", 0.0, "Warm-up as a fraction of the optimizer steps (not with train.warmup_steps)", 0.0,
           1.0});
    s.add({"train.warmup_steps", std::int64_t{0}, "Warm-up in optimizer steps (not with train.warmup_ratio)", 0.0});
    s.add({"train.max_grad_norm", 1.0, "Global gradient-norm clipping; 0: none", 0.0});
    s.add({"train.eval_every", std::int64_t{0},
           "Evaluate every N optimizer steps, and at each epoch end (once a step); 0: at epoch ends only", 0.0});
    s.add({"train.skip_nonfinite", false, "Skip a step with a non-finite loss or gradient instead of stopping"});
    s.add({"train.early_stopping_patience", std::int64_t{0}, "Evaluations without improvement before stopping; 0: off",
           0.0});
    s.add({"train.metric_for_best", std::string(""),
           "Dev metric that picks the best evaluation and drives early stopping; empty: the task's main metric "
           "(demo: accuracy)"});
    s.add({"train.greater_is_better", true, "Whether a larger train.metric_for_best is better"});
    s.add({"train.load_best_at_end", false,
           "End train and retune with the trainable tensors of their best evaluation (train.metric_for_best) instead "
           "of the last step's; either way trainable-<stage>-best.safetensors holds the best"});
    s.add({"train.label_smoothing", 0.0,
           "e2e/webnlg/dart: label smoothing ε of the causal LM loss, (1 − ε)·NLL + ε·mean −log p over the "
           "vocabulary (LoRA's E2E and WebNLG recipes: 0.1; DART: 0)",
           0.0, 1.0});
    s.add({"train.length_buckets", true,
           "e2e/webnlg/dart: training batches of similar-length sequences (the epoch's shuffled order cut into pools "
           "of 50 batches, each sorted by length, the batches shuffled; docs/nlg-data.md), each cut to its longest "
           "row; false: the shuffled order cut into batches; other tasks: no effect"});
    s.add({"prune.kind",
           std::string("none"),
           "Pruning after training",
           {},
           {},
           {"none", "unstructured", "heads", "imp", "earlybert"}});
    s.add({"prune.criterion",
           std::string("delta"),
           "How the adapted matrices' entries (unstructured) and the heads are scored: delta |ΔW| (DSEE), merged "
           "|W + ΔW|, random (uniform, from run.seed); the other projections are always scored by |W|",
           {},
           {},
           {"delta", "random", "merged"}});
    s.add({"prune.p_adapt", 0.3, "unstructured: fraction of the adapted matrices' entries removed (by prune.criterion)",
           0.0, 1.0});
    s.add({"prune.p_rest", 0.3, "unstructured: fraction of the other projections' entries removed (by |W|)", 0.0, 1.0});
    s.add({"prune.heads_per_layer", std::int64_t{3}, "heads: attention heads removed in every layer", 1.0});
    s.add({"prune.neurons_per_layer", std::int64_t{0},
           "earlybert: feed-forward neurons removed in every layer (the same in every layer, so config.json's "
           "intermediate_size shrinks by it)",
           0.0});
    s.add({"prune.search_steps", std::int64_t{200},
           "earlybert: optimizer steps of the search that trains the head and neuron coefficients (docs/tuning.md, "
           "'EarlyBERT')",
           1.0});
    s.add({"prune.l1", 1e-4, "earlybert: λ of the penalty λ·Σ|c| on the head and neuron coefficients", 0.0});
    s.add({"prune.sparsity", 0.5,
           "imp: fraction of the pool's entries (every encoder projection, BERT's pooler) removed after the last "
           "round, exactly round(s·N), by global |W| (docs/tuning.md, 'BERT tickets (IMP)')",
           0.0, 1.0});
    s.add({"prune.imp_rounds", std::int64_t{10},
           "imp: rounds of train, prune by |W|, rewind to the pretrained weights; each removes the same fraction "
           "1 − (1 − s)^(1/R) of what is left",
           1.0});
    s.add({"retune.epochs", std::int64_t{3}, "Epochs of re-tuning with the pruning fixed (0: none)", 0.0});
    s.add({"retune.lr", 0.0, "Re-tuning learning rate; 0: train.lr", 0.0, 1.0});
    s.add(
        {"retune.mask_update", true, "Re-tune and deploy (W + ΔW) ⊙ M (true), or the reference's W ⊙ M + ΔW (false)"});
    s.add({"eval.batch_size", std::int64_t{256},
           "Dev examples per evaluation forward pass; under data parallelism each rank evaluates whole batches of "
           "the 1-rank run, so metrics and predictions equal the 1-rank ones exactly",
           1.0});
    s.add({"eval.beam_size", std::int64_t{10}, "e2e/webnlg/dart: beams of the dev decoding (1: greedy)", 1.0});
    s.add({"eval.length_penalty", 0.9,
           "e2e/webnlg/dart: a finished beam scores Σ log p / new_tokens^length_penalty (LoRA paper: 0.9 for E2E, "
           "0.8 for WebNLG and DART)"});
    s.add({"eval.no_repeat_ngram_size", std::int64_t{4},
           "e2e/webnlg/dart: no n-gram of this size occurs twice in a decoded sequence (0: off)", 0.0});
    s.add({"eval.max_new_tokens", std::int64_t{64},
           "e2e/webnlg/dart: tokens decoded at most per context; the prompt keeps the last task.max_seq_length − "
           "this context tokens",
           1.0});
    s.add({"eval.max_items", std::int64_t{0},
           "e2e/webnlg/dart: decode and score only the first N dev contexts (0: all), for evaluations during "
           "training on a large dev set",
           0.0});
    s.add({"eval.splits", std::vector<std::string>{"dev"},
           "Splits the eval stage scores: [\"dev\"], or [\"dev\", \"test\"] for e2e/webnlg/dart to also decode "
           "task.test_file (all its contexts) into hypotheses/test.* and stages/eval.json's \"test\""});
    s.add({"export.format",
           std::string("none"),
           "Export after the run to export/: hf the merged model, peft a PEFT adapter (lora without pruning, or "
           "prefix; see dsee export)",
           {},
           {},
           {"none", "hf", "peft"}});
    s.add({"ckpt.keep_last", std::int64_t{2}, "Checkpoints kept in ckpt/", 1.0});
    s.add({"ckpt.every", std::int64_t{0}, "Checkpoint every N optimizer steps; 0: at each epoch end", 0.0});
    s.add({"dist.timeout_s", 600.0, "Seconds a collective may take before the job is aborted", 1.0});
    s.add({"dist.root_timeout_s", 7200.0,
           "Seconds the other ranks wait for rank 0's own work (Ω without omega.split_across_ranks, data, "
           "checkpoints, export) before the job is aborted; covers RoBERTa-large's reference Ω (about 1 h on one "
           "core) twice",
           1.0});
    s.add({"dist.backend",
           std::string("auto"),
           "Communicator: auto picks nccl for CUDA, mpi for the CPU",
           {},
           {},
           {"auto", "mpi", "nccl"}});
    s.add({"dist.fingerprint_every", std::int64_t{100},
           "Check every N optimizer steps that all ranks hold the same trainable parameters (0: never)", 0.0});
    return s;
  }();
  return schema;
}

}  // namespace dsee

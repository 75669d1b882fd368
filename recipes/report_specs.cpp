// The paper's tables as table specs: the same TOML a user's
// `dsee report --table SPEC.toml` reads (docs/report.md), kept as text so the
// built-in tables and users' specs go through one parser. The keys listed in
// `rows` come first in the labels, in that order; any other key that tells
// runs of one column apart follows (Note [Row keys] in report_table.cpp), so
// a sweep over more keys than the paper's still gets one row per setting.
#include "recipes/report_table.h"

namespace dsee {

const std::vector<std::pair<std::string, std::string>>& report_spec_builtins() {
  // Tables 2 and 4: the scores of the GPT-2 tasks, as the paper prints them.
  static const std::string nlg_scores = R"(split = "test"  # the paper reports the GPT-2 tables on the test sets
metrics = ["bleu", "nist", "meteor", "rouge_l", "cider", "ter"]
decimals = 2
[column_metrics]
e2e = ["bleu", "nist", "meteor", "rouge_l", "cider"]
webnlg = ["bleu", "bleu_seen", "bleu_unseen", "meteor", "ter"]
dart = ["bleu", "meteor", "ter"]
)";
  static const std::vector<std::pair<std::string, std::string>> specs = {
      {"1", R"(title = "Table 1: LoRA and DSEE (LoRA + sparse residual S) at two budgets"
rows = ["tuning.method", "tuning.rank", "omega.c"]
extras = ["trainable_parameters"]
)"},
      {"2", R"(title = "Table 2: GPT-2 on E2E, WebNLG and DART"
rows = ["tuning.method", "tuning.rank", "omega.c"]
extras = ["trainable_parameters"]
)" + nlg_scores},
      {"3", R"(title = "Table 3: unstructured DSEE (BERT-base) at sparsity levels"
rows = ["tuning.method", "prune.kind", "prune.p_adapt"]
extras = ["trainable_parameters", "nonzero_parameters"]
plot_x = "prune.p_adapt"
)"},
      {"4", R"(title = "Table 4: GPT-2 with pruning"
rows = ["tuning.method", "prune.p_adapt"]
extras = ["trainable_parameters", "nonzero_parameters"]
)" + nlg_scores},
      {"5", R"(title = "Table 5: unstructured DSEE (RoBERTa-large) at sparsity levels"
rows = ["tuning.method", "prune.p_adapt"]
extras = ["trainable_parameters", "nonzero_parameters"]
plot_x = "prune.p_adapt"
)"},
      {"6", R"(title = "Table 6: structured DSEE, attention heads removed per layer"
rows = ["prune.heads_per_layer"]
extras = ["flops_ratio"]
plot_x = "prune.heads_per_layer"
)"},
      {"7", R"(title = "Table 7: the pruning criterion"
rows = ["prune.criterion"]
)"},
      {"9", R"(title = "Table 9: the adapted modules at an equal budget"
rows = ["tuning.target_modules"]
extras = ["trainable_parameters"]
)"},
      {"fig2", R"(title = "Figure 2: the choice of Omega and its size c"
rows = ["omega.method", "omega.c"]
plot_x = "omega.c"
)"},
  };
  return specs;
}

}  // namespace dsee

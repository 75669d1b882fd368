// dsee export: write the final model of a finished run directory as a
// Hugging Face folder (hf) or a PEFT adapter (peft); recipes/export.h.
#include <cstdio>

#include "launch/commands.h"
#include "recipes/export.h"

namespace dsee {

Command export_command(CLI::App& app) {
  struct Options {
    std::string run_dir, format, out;
    bool no_lock = false;
  };
  auto options = std::make_shared<Options>();
  auto* sub = app.add_subcommand("export", "Export a finished run's model: hf (merged) or peft (LoRA adapter)");
  sub->add_option("run_dir", options->run_dir, "Run directory made by dsee run (holds config.toml)")->required();
  sub->add_option("--format", options->format, "hf: merged Hugging Face model; peft: PEFT LoRA adapter (lora runs)")
      ->required()
      ->check(CLI::IsMember({"hf", "peft"}));
  sub->add_option("--out", options->out, "Output folder (default: RUN_DIR/export)");
  sub->add_flag("--no-lock", options->no_lock,
                "Do not take the run directory's lock when writing into it (file systems without flock)");
  return {sub, [options] {
            const auto out =
                export_run(options->run_dir, export_format_from_name(options->format), options->out, !options->no_lock);
            std::printf("%s\n", out.string().c_str());
            return 0;
          }};
}

}  // namespace dsee

// GLUE task files (docs/models.md, 'Tasks'): readers for the TSV files of the standard
// distribution and their encoding into model tensors with the model folder's
// tokenizer (data/tokenizer.h).
//
// A task folder holds train.tsv and dev.tsv (MNLI: dev_matched.tsv and
// dev_mismatched.tsv). Fields are separated by tabs and never quoted (a '"'
// is text). CoLA has no header (source, label, original mark, sentence);
// every other file names its columns in the first line and the reader finds
// the text and label columns by name. Labels are numbered as transformers'
// GLUE processors number them (MNLI contradiction 0, entailment 1, neutral 2;
// QNLI/RTE entailment 0, not_entailment 1; the others "0"/"1"); STS-B holds
// a float score. Errors name the file, the line, the column and what was
// expected.
#pragma once

#include <ATen/core/Tensor.h>

#include <cstdint>
#include <filesystem>
#include <string>
#include <vector>

#include "data/tokenizer.h"

namespace dsee {

struct GlueFileSpec {
  std::string name;                      // canonical: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte, wnli
  std::int64_t num_labels;               // 1: regression (STS-B)
  std::vector<std::string> label_names;  // the label column's values, in id order; empty for STS-B
  std::vector<std::string> dev_files;    // dev.tsv, or MNLI's matched and mismatched files
};

// "cola", "CoLA", "SST-2", "sts-b", ... (case and '-' ignored); dsee::Error
// listing the tasks otherwise. glue_is_task: the same test without throwing.
const GlueFileSpec& glue_file_spec(const std::string& task);
bool glue_is_task(const std::string& task);

// One split: first[i] (and second[i] for pair tasks) with labels[i] (class
// ids) or scores[i] (STS-B).
struct GlueExamples {
  std::vector<std::string> first, second;  // second empty for CoLA, SST-2
  std::vector<std::int64_t> labels;
  std::vector<float> scores;
  std::size_t size() const { return first.size(); }
};

// Reads a train or dev file of `task`. Blank lines are skipped; '\r' before
// the newline is dropped; invalid UTF-8 is repaired to U+FFFD.
GlueExamples glue_read(const std::string& task, const std::filesystem::path& file);

// The model's inputs and targets: input_ids, attention_mask [n, seq] int64,
// token_type_ids [n, seq] int64 (WordPiece tokenizers; undefined for byte-
// level BPE, whose models have one token type), labels [n] int64 or float32
// (STS-B). Pairs are truncated longest-first to max_seq_length tokens,
// special tokens included; rows are right-padded to the longest row, or to
// max_seq_length when pad_to_max_length.
struct GlueTensors {
  at::Tensor input_ids, attention_mask, token_type_ids, labels;
};
GlueTensors glue_encode(const Tokenizer& tokenizer, const GlueExamples& examples, std::int64_t max_seq_length,
                        bool pad_to_max_length = false);

}  // namespace dsee

// model_resave IN OUT: loads a Hugging Face model folder with dsee and saves
// it to OUT. tests/parity/test_models.py (round_trip) then loads OUT with
// transformers and compares its logits with the original model's.
#include <cstdio>

#include "base/error.h"
#include "core/model/pretrained_model.h"

int main(int argc, char** argv) {
  if (argc != 3) {
    std::fprintf(stderr, "usage: model_resave IN_DIR OUT_DIR\n");
    return 2;
  }
  try {
    auto model = dsee::model_load(argv[1]);
    dsee::model_save(*model, argv[2]);
  } catch (const dsee::Error& e) {
    std::fprintf(stderr, "model_resave: %s\n", e.what());
    return 1;
  }
  return 0;
}

// Driver for tests/parity/test_prune_plan_h5py.py: moves masks between raw
// files (one byte per entry, row-major) and masks.h5 through core/prune_plan.
//
//   prune_plan_tool write OUT.h5 [mask=MODULE:ROWS:COLS:RAW]... [heads=LAYER:ID,ID,...]...
//   prune_plan_tool read IN.h5 OUTDIR   → OUTDIR/<module>.raw per mask; prints
//                                          "mask MODULE ROWS COLS" and "heads LAYER ID ..." lines
#include <ATen/ATen.h>

#include <cstdio>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "base/error.h"
#include "core/sparsity/prune_plan.h"

namespace {

std::vector<std::string> split(const std::string& text, char separator) {
  std::vector<std::string> parts;
  std::stringstream stream(text);
  std::string part;
  while (std::getline(stream, part, separator)) parts.push_back(part);
  return parts;
}

int write(int argc, char** argv) {
  dsee::PrunePlan plan;
  for (int i = 3; i < argc; ++i) {
    const std::string argument = argv[i];
    if (argument.rfind("mask=", 0) == 0) {
      const auto parts = split(argument.substr(5), ':');
      DSEE_CHECK(parts.size() == 4, "mask=MODULE:ROWS:COLS:RAW expected, got '{}'", argument);
      const std::int64_t rows = std::stoll(parts[1]), cols = std::stoll(parts[2]);
      std::ifstream raw(parts[3], std::ios::binary);
      std::vector<char> bytes(static_cast<std::size_t>(rows * cols));
      raw.read(bytes.data(), static_cast<std::streamsize>(bytes.size()));
      DSEE_CHECK(raw.gcount() == static_cast<std::streamsize>(bytes.size()), "short raw file '{}'", parts[3]);
      at::Tensor mask = at::empty({rows, cols}, at::kByte);
      std::copy(bytes.begin(), bytes.end(), reinterpret_cast<char*>(mask.data_ptr<std::uint8_t>()));
      plan.masks.push_back({parts[0], mask.to(at::kFloat)});
    } else if (argument.rfind("heads=", 0) == 0) {
      const auto parts = split(argument.substr(6), ':');
      DSEE_CHECK(parts.size() == 2, "heads=LAYER:ID,ID expected, got '{}'", argument);
      auto& heads = plan.heads[std::stoll(parts[0])];
      for (const std::string& id : split(parts[1], ',')) heads.push_back(std::stoll(id));
    } else {
      DSEE_CHECK(false, "unknown argument '{}'", argument);
    }
  }
  dsee::prune_plan_write(argv[2], plan);
  return 0;
}

int read(char** argv) {
  const dsee::PrunePlan plan = dsee::prune_plan_read(argv[2]);
  const std::string folder = argv[3];
  for (const auto& mask : plan.masks) {
    const at::Tensor bytes = mask.mask.to(at::kByte).contiguous();
    std::ofstream(folder + "/" + mask.module + ".raw", std::ios::binary)
        .write(reinterpret_cast<const char*>(bytes.data_ptr<std::uint8_t>()), bytes.numel());
    std::cout << "mask " << mask.module << " " << bytes.size(0) << " " << bytes.size(1) << "\n";
  }
  for (const auto& [layer, heads] : plan.heads) {
    std::cout << "heads " << layer;
    for (std::int64_t id : heads) std::cout << " " << id;
    std::cout << "\n";
  }
  return 0;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const std::string mode = argc > 2 ? argv[1] : "";
    if (mode == "write") return write(argc, argv);
    if (mode == "read" && argc == 4) return read(argv);
    std::cerr << "usage: prune_plan_tool write OUT.h5 [mask=M:R:C:RAW]... [heads=L:IDS]... | read IN.h5 OUTDIR\n";
    return 2;
  } catch (const dsee::Error& e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}

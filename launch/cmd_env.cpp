// dsee env: what this build is and where it runs, one block per rank.
//
// Every rank collects its own facts (devices and hosts differ per rank) and
// rank 0 prints them all in rank order, so the output under mpirun is not
// interleaved.
#include <nlohmann/json.hpp>

#include <iostream>

#include "base/versions.h"
#include "distributed/bootstrap.h"
#include "distributed/nccl_info.h"
#include "launch/commands.h"

namespace dsee {
namespace {

nlohmann::json env_report(const MpiSession& mpi) {
  const BuildInfo build = build_info();
  const NcclInfo nccl = nccl_info();
  const ProcessPlace& place = mpi.place();
  return {
      {"dsee", build.dsee_version},
      {"rank", place.rank},
      {"world_size", place.world_size},
      {"local_rank", place.local_rank},
      {"local_size", place.local_size},
      {"host", place.host},
      {"torch", build.torch_version},
      {"cuda_runtime", build.cuda_runtime},
      {"cuda_available", build.cuda_available},
      {"cuda_devices", build.cuda_devices},
      {"cudnn", build.cudnn},
      {"mpi", mpi.mpi_library_version()},
      {"nccl_enabled", nccl.enabled},
      {"nccl_compiled", nccl.compiled},
      {"nccl_loaded", nccl.loaded},
      {"hdf5_compiled", build.hdf5_compiled},
      {"hdf5_loaded", build.hdf5_loaded},
      {"spdlog", build.spdlog_version},
  };
}

std::string env_text(const nlohmann::json& r) {
  const auto s = [&](const char* key) { return r[key].get<std::string>(); };
  std::string devices = r["cuda_devices"].empty() ? "none" : "";
  for (const auto& d : r["cuda_devices"]) devices += (devices.empty() ? "" : ", ") + d.get<std::string>();
  return fmt::format(
      "dsee {}: rank {} of {} on {} (local rank {} of {})\n"
      "  torch    {} (CUDA runtime {}; CUDA available: {}; devices: {})\n"
      "  cuDNN    {}\n"
      "  MPI      {}\n"
      "  NCCL     {}\n"
      "  HDF5     compiled {}, loaded {}\n"
      "  spdlog   {}\n",
      s("dsee"), r["rank"].get<int>(), r["world_size"].get<int>(), s("host"), r["local_rank"].get<int>(),
      r["local_size"].get<int>(), s("torch"), s("cuda_runtime").empty() ? "none" : s("cuda_runtime"),
      r["cuda_available"].get<bool>() ? "yes" : "no", devices, s("cudnn"), s("mpi"),
      r["nccl_enabled"].get<bool>() ? fmt::format("compiled {}, loaded {}", s("nccl_compiled"), s("nccl_loaded"))
                                    : std::string("backend off (built without a CUDA toolkit)"),
      s("hdf5_compiled"), s("hdf5_loaded"), s("spdlog"));
}

}  // namespace

Command env_command(CLI::App& app) {
  auto* sub = app.add_subcommand("env", "Print versions, devices and this process's place among the ranks");
  auto json = std::make_shared<bool>(false);
  sub->add_flag("--json", *json, "Print a JSON array with one object per rank");
  return {sub, [json] {
            MpiSession mpi;
            const std::string mine = env_report(mpi).dump();
            const std::vector<std::string> all = gather_strings_to_root(mine);
            if (mpi.place().rank != 0) return 0;
            if (*json) {
              nlohmann::json array = nlohmann::json::array();
              for (const auto& text : all) array.push_back(nlohmann::json::parse(text));
              std::cout << array.dump(2) << std::endl;
            } else {
              for (const auto& text : all) std::cout << env_text(nlohmann::json::parse(text));
              std::cout.flush();
            }
            return 0;
          }};
}

}  // namespace dsee

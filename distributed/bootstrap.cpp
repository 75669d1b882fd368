#include "distributed/bootstrap.h"

#include <fmt/format.h>
#include <mpi.h>
#include <unistd.h>

#include <charconv>
#include <cstdlib>
#include <string_view>

#include "base/error.h"
#include "base/log.h"
#include "distributed/mpi_check.h"

namespace dsee {

MpiSession::MpiSession() {
  int initialized = 0;
  MPI_Initialized(&initialized);
  DSEE_ASSERT(!initialized, "MpiSession created twice");
  // MULTIPLE: the watchdog thread may abort the job while the main thread is
  // inside a collective.
  int provided = 0;
  mpi_check(MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided), "MPI_Init_thread");
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  mpi_check(MPI_Comm_rank(MPI_COMM_WORLD, &place_.rank), "MPI_Comm_rank");
  mpi_check(MPI_Comm_size(MPI_COMM_WORLD, &place_.world_size), "MPI_Comm_size");
  MPI_Comm node = MPI_COMM_NULL;
  mpi_check(MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, place_.rank, MPI_INFO_NULL, &node),
            "MPI_Comm_split_type");
  MPI_Comm_rank(node, &place_.local_rank);
  MPI_Comm_size(node, &place_.local_size);
  MPI_Comm_free(&node);
  char host[256] = {};
  gethostname(host, sizeof host - 1);
  place_.host = host;
  log_set_rank(place_.rank, place_.world_size);
  if (const std::string mismatch =
          launch_mismatch(place_.world_size, [](const char* name) { return std::getenv(name); });
      !mismatch.empty()) {
    // Before anything is written: end MPI here, since no session will.
    MPI_Finalize();
    throw Error(mismatch);
  }
  if (provided < MPI_THREAD_MULTIPLE)
    spdlog::warn(
        "this MPI library gives thread level {} < MPI_THREAD_MULTIPLE; the watchdog's abort "
        "from a second thread is not guaranteed",
        provided);
}

MpiSession::~MpiSession() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

std::string MpiSession::mpi_library_version() const {
  char text[MPI_MAX_LIBRARY_VERSION_STRING] = {};
  int length = 0;
  MPI_Get_library_version(text, &length);
  std::string version(text, static_cast<std::size_t>(length));
  // Open MPI appends the repository and release date: keep the first line.
  while (!version.empty() && (version.back() == '\n' || version.back() == '\0')) version.pop_back();
  if (const auto comma = version.find(','); comma != std::string::npos) version.resize(comma);
  return version;
}

std::string launch_mismatch(int world_size, const std::function<const char*(const char*)>& getenv) {
  if (world_size != 1 || getenv("OMPI_COMM_WORLD_SIZE") != nullptr || getenv("SLURM_PROCID") == nullptr) return {};
  const char* tasks_text = getenv("SLURM_STEP_NUM_TASKS");
  if (tasks_text == nullptr) return {};
  const std::string_view text(tasks_text);
  int tasks = 0;
  const auto [end, error] = std::from_chars(text.data(), text.data() + text.size(), tasks);
  if (error != std::errc{} || end != text.data() + text.size() || tasks <= 1) return {};
  return fmt::format(
      "srun started {} tasks (SLURM_STEP_NUM_TASKS), but MPI sees this process as a world of 1 (task {}): srun's MPI "
      "plugin does not connect Open MPI's ranks, so each task would run the whole job alone. Start the ranks with "
      "`srun --mpi=pmix` (launch/slurm.sbatch does; `srun --mpi=list` shows the plugins), or ask the cluster's admins "
      "for MpiDefault=pmix",
      tasks, getenv("SLURM_PROCID"));
}

std::vector<std::string> gather_strings_to_root(const std::string& text) {
  int rank = 0, size = 1;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  int length = static_cast<int>(text.size());
  std::vector<int> lengths(static_cast<std::size_t>(size));
  mpi_check(MPI_Gather(&length, 1, MPI_INT, lengths.data(), 1, MPI_INT, 0, MPI_COMM_WORLD), "MPI_Gather");
  std::vector<int> offsets(static_cast<std::size_t>(size), 0);
  int total = 0;
  for (int r = 0; r < size; ++r) offsets[r] = total, total += lengths[r];
  std::string all(static_cast<std::size_t>(rank == 0 ? total : 0), '\0');
  mpi_check(MPI_Gatherv(text.data(), length, MPI_CHAR, all.data(), lengths.data(), offsets.data(), MPI_CHAR, 0,
                        MPI_COMM_WORLD),
            "MPI_Gatherv");
  std::vector<std::string> out;
  if (rank == 0)
    for (int r = 0; r < size; ++r) out.push_back(all.substr(offsets[r], lengths[r]));
  return out;
}

}  // namespace dsee

// The run directory: see run_dir.h.
//
// Note [The run directory lock]
// ~~~~~~~~~~~~~~~~~~~~~~~~~~~~~
// Two processes in one run directory would interleave checkpoints, stage
// records and metrics lines, so `dsee run` (and `dsee export` into a run)
// takes flock(LOCK_EX | LOCK_NB) on <run>/.lock when it claims the directory
// and holds it until it is done. A second process fails at once, before it
// writes anything, naming the holder from what the holder wrote into the file
// (host, pid, start time in UTC). The kernel releases a flock when the last
// descriptor of its open file goes away, which includes any death of the
// process (SIGKILL, out of memory), so a lock left by a dead process never
// blocks; the file itself stays, is never removed (removing it would let two
// processes lock two different files of the same name) and is overwritten by
// the next holder. The descriptor is close-on-exec, so no child keeps it.
//
// File systems: on a local disk and on NFS (Linux clients turn flock into an
// NFS byte-range lock since 2.6.12, so with NFSv4 or NFSv3 with a lock
// manager the lock holds across nodes; mounted with -o nolock or
// local_lock=flock it holds only within one node). Lustre grants flock across
// the cluster only when mounted with -o flock; with -o localflock it holds
// within one node, and with neither (the default) flock fails with ENOSYS:
// then the lock is refused with advice to set run.lock = false, which leaves
// keeping two processes out of one run directory to the user. Under mpirun
// only rank 0 takes the lock, inside its claim of the directory.
#include "recipes/run_dir.h"

#include <fcntl.h>
#include <fmt/format.h>
#include <fmt/ranges.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <ctime>
#include <vector>

#include "base/error.h"
#include "base/files.h"

namespace dsee {

namespace fs = std::filesystem;

namespace {

// "host n1, pid 42, started 2025-01-31 12:00:00 UTC": who holds the lock.
std::string lock_holder_text() {
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) != 0) std::snprintf(host, sizeof host, "unknown");
  const std::time_t now = std::time(nullptr);
  std::tm utc{};
  gmtime_r(&now, &utc);
  char started[32] = {};
  std::strftime(started, sizeof started, "%Y-%m-%d %H:%M:%S UTC", &utc);
  return fmt::format("host {}, pid {}, started {}", host, getpid(), started);
}

// What the holder recorded in the lock's file (read through `fd`).
std::string lock_recorded(int fd) {
  std::string text(512, '\0');
  const ssize_t n = pread(fd, text.data(), text.size(), 0);
  text.resize(n > 0 ? static_cast<std::size_t>(n) : 0);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\0')) text.pop_back();
  return text.empty() ? "a process that has not recorded itself yet" : text;
}

}  // namespace

RunDir::RunDir(fs::path dir, fs::path data) : dir_(std::move(dir)), data_(std::move(data)) {}

RunDir::RunDir(fs::path dir) : dir_(std::move(dir)), data_(dir_ / "data") {}

RunDir RunDir::of(const Recipe& recipe) { return RunDir(fs::path(recipe.run.out_dir) / recipe.run.name); }

RunDir::RunDir(RunDir&& other) noexcept
    : dir_(std::move(other.dir_)), data_(std::move(other.data_)), lock_fd_(other.lock_fd_) {
  other.lock_fd_ = -1;
}

RunDir& RunDir::operator=(RunDir&& other) noexcept {
  if (this != &other) {
    if (lock_fd_ >= 0) ::close(lock_fd_);
    dir_ = std::move(other.dir_);
    data_ = std::move(other.data_);
    lock_fd_ = other.lock_fd_;
    other.lock_fd_ = -1;
  }
  return *this;
}

RunDir::~RunDir() {
  if (lock_fd_ >= 0) ::close(lock_fd_);  // releases the flock
}

RunDir RunDir::arm(const std::string& name) const { return RunDir(dir_ / name, data_); }

fs::path RunDir::checkpoints(Stage stage) const {
  DSEE_ASSERT(stage == Stage::train || stage == Stage::retune, "no checkpoints of stage {}", stage_name(stage));
  return stage == Stage::train ? dir_ / "ckpt" : dir_ / "ckpt" / stage_name(stage);
}

fs::path RunDir::imp_checkpoints(std::int64_t round) const { return dir_ / "ckpt" / fmt::format("prune-{}", round); }

fs::path RunDir::trainables(Stage stage) const {
  return dir_ / fmt::format("trainable-{}.safetensors", stage_name(stage));
}

fs::path RunDir::best_trainables(Stage stage) const {
  return dir_ / fmt::format("trainable-{}-best.safetensors", stage_name(stage));
}

void RunDir::lock() {
  if (lock_fd_ >= 0) return;
  folder_create(dir_);
  const auto path = lock_file();
  const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  DSEE_CHECK(fd >= 0, "cannot open the run directory's lock '{}': {}", path.string(), errno_text());
  int status;
  do status = ::flock(fd, LOCK_EX | LOCK_NB);
  while (status != 0 && errno == EINTR);
  if (status != 0) {
    const int error = errno;
    const std::string holder = error == EWOULDBLOCK ? lock_recorded(fd) : std::string();
    ::close(fd);
    if (error == EWOULDBLOCK)
      throw Error(fmt::format(
          "run directory '{}' is in use: another dsee process holds its lock '{}' ({}); wait for it to end or stop "
          "it (a lock whose process has died never blocks)",
          dir_.string(), path.string(), holder));
    throw Error(fmt::format(
        "cannot lock the run directory: flock on '{}' failed: {}; on a file system without flock (Lustre mounted "
        "without -o flock, NFS without a lock manager) set run.lock = false (dsee export: --no-lock) and keep "
        "other processes out of the directory yourself (docs/recipes.md, 'The run directory lock')",
        path.string(), errno_text(error)));
  }
  lock_fd_ = fd;
  const std::string text = lock_holder_text() + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, text.data(), text.size(), 0) != static_cast<ssize_t>(text.size()))
    throw Error(fmt::format("cannot write the run directory's lock '{}': {}", path.string(), errno_text()));
}

void RunDir::claim(const std::string& identity, bool lock_it) {
  if (lock_it) lock();
  folder_create(dir_ / "stages");
  const auto path = config();
  if (fs::exists(path)) {
    const std::string recorded = file_read_text(path);
    if (recorded == identity) return;
    const auto a = recipe_lines(recorded), b = recipe_lines(identity);
    std::vector<std::string> differences;
    for (const auto& [key, value] : b) {
      const auto it = a.find(key);
      if (it == a.end() || it->second != value)
        differences.push_back(
            fmt::format("{}: {} in the run, {} now", key, it == a.end() ? "absent" : it->second, value));
    }
    throw Error(
        fmt::format("run directory '{}' was made by a different recipe ({}); choose another run.name or "
                    "delete the directory to start over",
                    dir_.string(), fmt::join(differences, "; ")));
  }
  file_write_text(path, identity);
}

std::optional<nlohmann::json> RunDir::record_read(Stage stage) const {
  const auto path = record(stage);
  if (!fs::exists(path)) return std::nullopt;
  return file_read_json(path, "delete it to redo that stage");
}

void RunDir::record_write(Stage stage, const nlohmann::json& record_json) const {
  file_write_json(record(stage), record_json);
}

}  // namespace dsee

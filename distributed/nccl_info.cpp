#include "distributed/nccl_info.h"

#include <fmt/format.h>

#ifdef DSEE_HAVE_NCCL
#include <nccl.h>
#endif

namespace dsee {

#ifdef DSEE_HAVE_NCCL
namespace {
// NCCL >= 2.9 encodes versions as major*10000 + minor*100 + patch.
std::string nccl_version_text(int code) { return fmt::format("{}.{}.{}", code / 10000, code / 100 % 100, code % 100); }
}  // namespace

NcclInfo nccl_info() {
  int loaded = 0;
  ncclGetVersion(&loaded);
  return NcclInfo{true, nccl_version_text(NCCL_VERSION_CODE), nccl_version_text(loaded)};
}
#else
NcclInfo nccl_info() { return NcclInfo{}; }
#endif

}  // namespace dsee

// pzt's NCCL process group (CUDA ranks): built only when the CUDA wheel's NCCL and CUDA headers
// are there (scripts/bootstrap.sh fetches the header packages the wheel leaves out).
#define USE_C10D_NCCL 1
#include <torch/csrc/distributed/c10d/ProcessGroupNCCL.hpp>
#include <cstring>
#include <string>
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include "dist.h"
#include "errors.h"

// An NCCL process group of `size` ranks over `s`, this one on CUDA device `device`.
extern "C" char* pzt_group_new_nccl(PztStore* s, int rank, int size, int64_t timeout_ms,
                                    int device, const char* prefix, PztGroup** out) {
  try {
    auto timeout = std::chrono::milliseconds(timeout_ms);
    auto opts = c10d::ProcessGroupNCCL::Options::create();
    opts->timeout = timeout;
    at::Device dev(at::kCUDA, static_cast<c10::DeviceIndex>(device));
    auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s->store);
    auto pg = c10::make_intrusive<c10d::ProcessGroupNCCL>(store, rank, size, opts);
    pg->setBoundDeviceId(dev);
    *out = new PztGroup{pg, timeout};
    return nullptr;
  } catch (const std::exception& e) {
    return pzt_dup_error(pzt_error_text(e));
  }
}

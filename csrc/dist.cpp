// pzt's data-parallel hooks: libtorch's own distributed engine (c10d). A TCP key-value store for
// the rendezvous, a Gloo process group (the CPU; CUDA tensors are staged through the host), and
// all-reduce of a list of tensors in flat buckets, launched together and waited for together.
#define USE_C10D_GLOO 1
#include <torch/csrc/distributed/c10d/PrefixStore.hpp>
#include <torch/csrc/distributed/c10d/ProcessGroupGloo.hpp>
#include <torch/csrc/distributed/c10d/TCPStore.hpp>
#include <torch/torch.h>
#include "dist.h"
#include "errors.h"
#include <c10/util/Logging.h>
#include <chrono>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

// A TCP store at host:port: the server (port 0 picks a free one) or a client of it. Keys are
// prefixed with `prefix` (a run's attempt), so that a store shared with a launcher stays tidy.
extern "C" char* pzt_store_new(const char* host, int port, bool server, int64_t timeout_ms,
                               const char* prefix, PztStore** out) {
  PZT_TRY
  c10d::TCPStoreOptions o;
  o.port = static_cast<std::uint16_t>(port);
  o.isServer = server;
  o.numWorkers = std::nullopt;
  o.waitWorkers = false;
  o.timeout = std::chrono::milliseconds(timeout_ms);
  auto tcp = c10::make_intrusive<c10d::TCPStore>(std::string(host), o);
  c10::intrusive_ptr<c10d::Store> store = tcp;
  if (prefix != nullptr && prefix[0] != 0)
    store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), tcp);
  *out = new PztStore{tcp, store};
  PZT_CATCH
}

extern "C" int pzt_store_port(PztStore* s) { return s == nullptr ? 0 : s->tcp->getPort(); }

extern "C" void pzt_store_free(PztStore* s) { delete s; }

// A Gloo process group of `size` ranks over `s` (its keys under `prefix`). The transport binds to `iface` when given (a
// network interface name, like GLOO_SOCKET_IFNAME), else to `host` when given, else to the
// address this machine's hostname resolves to (libtorch's default).
extern "C" char* pzt_group_new(PztStore* s, int rank, int size, int64_t timeout_ms,
                               const char* iface, const char* host, const char* prefix,
                               PztGroup** out) {
  PZT_TRY
  auto timeout = std::chrono::milliseconds(timeout_ms);
  auto opts = c10d::ProcessGroupGloo::Options::create(timeout);
  if (iface != nullptr && iface[0] != 0) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForInterface(iface));
  } else if (host != nullptr && host[0] != 0) {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDeviceForHostname(host));
  } else {
    opts->devices.push_back(c10d::ProcessGroupGloo::createDefaultDevice());
  }
  auto store = c10::make_intrusive<c10d::PrefixStore>(std::string(prefix), s->store);
  auto pg = c10::make_intrusive<c10d::ProcessGroupGloo>(store, rank, size, opts);
  *out = new PztGroup{pg, timeout};
  PZT_CATCH
}

extern "C" void pzt_group_free(PztGroup* g) { delete g; }

namespace {
c10d::ReduceOp reduce_op(int op) {
  switch (op) {
    case 1:
      return c10d::ReduceOp::MAX;
    case 2:
      return c10d::ReduceOp::MIN;
    default:
      return c10d::ReduceOp::SUM;
  }
}
}  // namespace

// All-reduces `ts` in place (op: 0 sum, 1 max, 2 min). Tensors of one dtype and device are
// packed into flat buckets of at most `bucket_bytes` (a tensor larger than that is a bucket of
// its own); every bucket is launched before any is waited for, and the results are copied back.
extern "C" char* pzt_group_allreduce(PztGroup* g, torch::Tensor** ts, int n, int op,
                                     int64_t bucket_bytes) {
  PZT_TRY
  at::NoGradGuard ng;
  c10d::AllreduceOptions ao;
  ao.reduceOp = reduce_op(op);
  ao.timeout = g->timeout;
  struct Bucket {
    std::vector<int> members;
    at::Tensor flat;
    c10::intrusive_ptr<c10d::Work> work;
  };
  std::vector<Bucket> buckets;
  std::vector<int> open;  // per (dtype, device) key: the bucket being filled
  std::vector<std::pair<at::ScalarType, at::Device>> keys;
  std::vector<int64_t> filled;
  for (int i = 0; i < n; ++i) {
    const at::Tensor& t = *ts[i];
    auto key = std::make_pair(t.scalar_type(), t.device());
    size_t k = 0;
    while (k < keys.size() && keys[k] != key) ++k;
    int64_t bytes = t.numel() * static_cast<int64_t>(t.element_size());
    if (k == keys.size()) {
      keys.push_back(key);
      open.push_back(-1);
      filled.push_back(0);
    }
    if (open[k] < 0 || filled[k] + bytes > bucket_bytes) {
      buckets.push_back(Bucket{});
      open[k] = static_cast<int>(buckets.size()) - 1;
      filled[k] = 0;
    }
    buckets[open[k]].members.push_back(i);
    filled[k] += bytes;
  }
  for (auto& b : buckets) {
    if (b.members.size() == 1) {
      at::Tensor& t = *ts[b.members[0]];
      b.flat = t.is_contiguous() ? t : t.contiguous();
    } else {
      std::vector<at::Tensor> flat;
      for (int i : b.members) flat.push_back(ts[i]->reshape({-1}));
      b.flat = at::cat(flat);
    }
    std::vector<at::Tensor> one{b.flat};
    b.work = g->pg->allreduce(one, ao);
  }
  for (auto& b : buckets) {
    b.work->wait(g->timeout);
    if (b.members.size() == 1) {
      at::Tensor& t = *ts[b.members[0]];
      if (!b.flat.is_same(t)) t.copy_(b.flat);
      continue;
    }
    int64_t at = 0;
    for (int i : b.members) {
      at::Tensor& t = *ts[i];
      t.copy_(b.flat.narrow(0, at, t.numel()).view(t.sizes()));
      at += t.numel();
    }
  }
  PZT_CATCH
}

extern "C" char* pzt_group_barrier(PztGroup* g) {
  PZT_TRY
  c10d::BarrierOptions bo;
  bo.timeout = g->timeout;
  g->pg->barrier(bo)->wait(g->timeout);
  PZT_CATCH
}

// c10d logs warnings and errors (socket timeouts, retries, with C++ backtraces) on stderr
// through c10's logging; a failure reaches the user as pzt's own error instead, so only fatal
// messages stay. TORCH_CPP_LOG_LEVEL, when set, decides.
extern "C" void pzt_quiet_c10d() {
  if (std::getenv("TORCH_CPP_LOG_LEVEL") == nullptr) FLAGS_caffe2_log_level = 3;
}

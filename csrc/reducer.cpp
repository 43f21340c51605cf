// pzt's gradient reducer for data-parallel training: each parameter gets a post-accumulate-grad
// hook, so that a bucket's all-reduce starts as soon as the backward pass has produced all of
// its gradients, while the backward pass goes on (PyTorch DDP's overlap). Buckets are filled in
// reverse parameter order (the order gradients tend to arrive in) and launched strictly in
// bucket order, so every rank issues the same collectives in the same order. A bucket whose
// gradients did not all arrive (a parameter without a gradient this step) is launched by
// `pzt_reducer_finish`, with zeros in place of the missing ones; a parameter with a gradient on
// some rank then gets the sum on every rank.
#include <torch/csrc/autograd/function_hook.h>
#include <torch/csrc/autograd/variable.h>
#include <torch/torch.h>
#include <cstring>
#include <memory>
#include <mutex>
#include <string>
#include <vector>
#include "dist.h"
#include "errors.h"

namespace {
struct Bucket {
  std::vector<int> members;
  int pending = 0;
  at::Tensor flat;
  c10::intrusive_ptr<c10d::Work> work;
};

struct State {
  std::mutex m;
  c10::intrusive_ptr<c10d::Backend> pg;
  std::chrono::milliseconds timeout{0};
  std::vector<at::Tensor> params;
  std::vector<int> bucket_of;
  std::vector<bool> ready;
  std::vector<Bucket> buckets;
  size_t next = 0;   // the next bucket to launch
  size_t early = 0;  // buckets the hooks launched (during the backward pass)
  bool armed = false;
  std::string error;

  // Flattens bucket `b` (zeros for gradients that are not there) and starts its all-reduce.
  void launch(Bucket& b) {
    std::vector<at::Tensor> parts;
    for (int i : b.members) {
      const at::Tensor& p = params[i];
      const at::Tensor& g = p.grad();
      parts.push_back(g.defined() ? g.detach().reshape({-1})
                                  : at::zeros({p.numel()}, p.options()));
    }
    b.flat = parts.size() == 1 ? parts[0].clone() : at::cat(parts);
    std::vector<at::Tensor> one{b.flat};
    c10d::AllreduceOptions ao;
    ao.reduceOp = c10d::ReduceOp::SUM;
    ao.timeout = timeout;
    b.work = pg->allreduce(one, ao);
  }

  // Launches, in order, every bucket whose gradients are all there.
  void launch_ready() {
    while (next < buckets.size() && buckets[next].pending == 0) launch(buckets[next++]);
  }

  void arrived(int i) {
    std::lock_guard<std::mutex> lock(m);
    if (!armed || !error.empty() || ready[i]) return;
    ready[i] = true;
    buckets[bucket_of[i]].pending -= 1;
    try {
      at::NoGradGuard ng;
      size_t before = next;
      launch_ready();
      early += next - before;
    } catch (const std::exception& e) {
      error = pzt_error_text(e);
    }
  }
};

struct Hook : torch::autograd::PostAccumulateGradHook {
  std::shared_ptr<State> state;
  int index;
  Hook(std::shared_ptr<State> s, int i) : state(std::move(s)), index(i) {}
  void operator()(const torch::autograd::Variable&) override { state->arrived(index); }
};
}  // namespace

struct PztReducer {
  std::shared_ptr<State> state;
};

// A reducer over `params` (leaf tensors that require grad) for group `g`, with buckets of at
// most `bucket_bytes` per dtype and device.
extern "C" char* pzt_reducer_new(PztGroup* g, torch::Tensor** params, int n, int64_t bucket_bytes,
                                 PztReducer** out) {
  try {
    auto s = std::make_shared<State>();
    s->pg = g->pg;
    s->timeout = g->timeout;
    for (int i = 0; i < n; ++i) s->params.push_back(*params[i]);
    s->bucket_of.assign(n, -1);
    s->ready.assign(n, false);
    std::vector<std::pair<at::ScalarType, at::Device>> keys;
    std::vector<int> open;
    std::vector<int64_t> filled;
    for (int i = n - 1; i >= 0; --i) {
      const at::Tensor& p = s->params[i];
      auto key = std::make_pair(p.scalar_type(), p.device());
      size_t k = 0;
      while (k < keys.size() && keys[k] != key) ++k;
      if (k == keys.size()) {
        keys.push_back(key);
        open.push_back(-1);
        filled.push_back(0);
      }
      int64_t bytes = p.numel() * static_cast<int64_t>(p.element_size());
      if (open[k] < 0 || filled[k] + bytes > bucket_bytes) {
        s->buckets.emplace_back();
        open[k] = static_cast<int>(s->buckets.size()) - 1;
        filled[k] = 0;
      }
      s->buckets[open[k]].members.push_back(i);
      s->buckets[open[k]].pending += 1;
      s->bucket_of[i] = open[k];
      filled[k] += bytes;
    }
    for (int i = 0; i < n; ++i)
      torch::autograd::impl::set_post_acc_grad_hooks(s->params[i], std::make_unique<Hook>(s, i));
    *out = new PztReducer{s};
    return nullptr;
  } catch (const std::exception& e) {
    return pzt_dup_error(pzt_error_text(e));
  }
}

// The next backward pass's gradients are reduced as they arrive.
extern "C" void pzt_reducer_arm(PztReducer* r) {
  auto& s = *r->state;
  std::lock_guard<std::mutex> lock(s.m);
  for (auto& b : s.buckets) {
    b.pending = static_cast<int>(b.members.size());
    b.flat = at::Tensor();
    b.work.reset();
  }
  std::fill(s.ready.begin(), s.ready.end(), false);
  s.next = 0;
  s.early = 0;
  s.error.clear();
  s.armed = true;
}

// After the backward pass: launches the buckets still waiting, waits for all of them, and
// writes the sums into the gradients. A parameter that has a gradient on some rank gets one on
// every rank (a small all-reduce of flags, after the buckets), so that every rank's optimizer
// updates the same parameters; one that has none anywhere keeps none.
extern "C" char* pzt_reducer_finish(PztReducer* r) {
  auto& s = *r->state;
  std::lock_guard<std::mutex> lock(s.m);
  bool was_armed = s.armed;
  s.armed = false;
  try {
    if (!was_armed) throw std::runtime_error("the gradient reducer was not armed for this pass");
    if (!s.error.empty()) throw std::runtime_error(s.error);
    at::NoGradGuard ng;
    while (s.next < s.buckets.size()) s.launch(s.buckets[s.next++]);
    size_t n = s.params.size();
    std::vector<int32_t> flags(n, 0);
    for (size_t i = 0; i < n; ++i) flags[i] = s.params[i].grad().defined() ? 1 : 0;
    at::Tensor has;
    c10::intrusive_ptr<c10d::Work> flag_work;
    if (n > 0) {
      has = at::from_blob(flags.data(), {static_cast<int64_t>(n)}, at::kInt)
                .to(s.params[0].device(), /*non_blocking=*/false, /*copy=*/true);
      std::vector<at::Tensor> one{has};
      c10d::AllreduceOptions ao;
      ao.reduceOp = c10d::ReduceOp::SUM;
      ao.timeout = s.timeout;
      flag_work = s.pg->allreduce(one, ao);
    }
    for (auto& b : s.buckets) b.work->wait(s.timeout);
    std::vector<int32_t> anywhere(n, 0);
    if (n > 0) {
      flag_work->wait(s.timeout);
      at::Tensor h = has.to(at::kCPU).contiguous();
      memcpy(anywhere.data(), h.data_ptr<int32_t>(), n * sizeof(int32_t));
    }
    for (auto& b : s.buckets) {
      int64_t at = 0;
      for (int i : b.members) {
        at::Tensor& p = s.params[i];
        int64_t numel = p.numel();
        at::Tensor sum = b.flat.narrow(0, at, numel).view(p.sizes());
        at::Tensor g = p.mutable_grad();
        if (g.defined()) {
          g.copy_(sum);
        } else if (anywhere[i] > 0) {
          p.mutable_grad() = sum.clone();
        }
        at += numel;
      }
      b.flat = at::Tensor();
      b.work.reset();
    }
    return nullptr;
  } catch (const std::exception& e) {
    return pzt_dup_error(pzt_error_text(e));
  }
}

// How many buckets the last armed backward pass launched itself, and how many there are.
extern "C" void pzt_reducer_counts(PztReducer* r, int64_t* early, int64_t* total) {
  std::lock_guard<std::mutex> lock(r->state->m);
  *early = static_cast<int64_t>(r->state->early);
  *total = static_cast<int64_t>(r->state->buckets.size());
}

// Removes the hooks and frees the reducer.
extern "C" void pzt_reducer_free(PztReducer* r) {
  if (r == nullptr) return;
  {
    std::lock_guard<std::mutex> lock(r->state->m);
    r->state->armed = false;
  }
  for (auto& p : r->state->params) {
    try {
      torch::autograd::impl::set_post_acc_grad_hooks(p, nullptr);
    } catch (...) {
    }
  }
  delete r;
}

// pzt's C++ shim: the few libtorch switches that tch 0.24 does not expose.
//
// Every function catches C++ exceptions and reports them through a heap-allocated message
// (freed with pzt_free_error) so that nothing unwinds into Rust. Tensors cross the boundary as
// `torch::Tensor*`, the same handle type tch uses (`C_tensor`).
#include <ATen/Context.h>
#include <ATen/autocast_mode.h>
#include <ATen/core/Generator.h>
#include <torch/torch.h>
#include <torch/headeronly/version.h>
#include "errors.h"
#include <cstring>
#include <string>

namespace {
char* dup_error(const std::string& s) { return pzt_dup_error(s); }

c10::Device make_device(int device) {
  // device < 0: CPU; device >= 0: that CUDA ordinal.
  if (device < 0) return c10::Device(c10::DeviceType::CPU);
  return c10::Device(c10::DeviceType::CUDA, static_cast<c10::DeviceIndex>(device));
}
}  // namespace

extern "C" {

void pzt_free_error(char* e) { free(e); }

char* pzt_set_deterministic(bool on, bool warn_only) {
  PZT_TRY
  at::globalContext().setDeterministicAlgorithms(on, warn_only);
  PZT_CATCH
}

bool pzt_deterministic_warn_only() { return at::globalContext().deterministicAlgorithmsWarnOnly(); }

bool pzt_deterministic() { return at::globalContext().deterministicAlgorithms(); }

char* pzt_set_cudnn_deterministic(bool on) {
  PZT_TRY
  at::globalContext().setDeterministicCuDNN(on);
  at::globalContext().setBenchmarkCuDNN(!on);
  PZT_CATCH
}

bool pzt_cudnn_deterministic() { return at::globalContext().deterministicCuDNN(); }

// Autocast for a device type (0 = CPU, 1 = CUDA) with a dtype given as a c10 ScalarType code.
char* pzt_set_autocast(int device_type, bool enabled, int scalar_type) {
  PZT_TRY
  auto dt = device_type == 0 ? at::kCPU : at::kCUDA;
  at::autocast::set_autocast_enabled(dt, enabled);
  if (enabled) {
    at::autocast::set_autocast_dtype(dt, static_cast<at::ScalarType>(scalar_type));
  } else {
    at::autocast::clear_cache();
  }
  PZT_CATCH
}

bool pzt_autocast_enabled(int device_type) {
  return at::autocast::is_autocast_enabled(device_type == 0 ? at::kCPU : at::kCUDA);
}

int pzt_autocast_dtype(int device_type) {
  return static_cast<int>(at::autocast::get_autocast_dtype(device_type == 0 ? at::kCPU : at::kCUDA));
}

// Scaled-dot-product-attention backends (CUDA): flash, memory-efficient, math, cuDNN.
char* pzt_set_sdpa_backends(bool flash, bool mem_efficient, bool math, bool cudnn) {
  PZT_TRY
  auto& ctx = at::globalContext();
  ctx.setSDPUseFlash(flash);
  ctx.setSDPUseMemEfficient(mem_efficient);
  ctx.setSDPUseMath(math);
  ctx.setSDPUseCuDNN(cudnn);
  PZT_CATCH
}

void pzt_sdpa_backends(bool* out4) {
  auto& ctx = at::globalContext();
  out4[0] = ctx.userEnabledFlashSDP();
  out4[1] = ctx.userEnabledMemEfficientSDP();
  out4[2] = ctx.userEnabledMathSDP();
  out4[3] = ctx.userEnabledCuDNNSDP();
}

// The state of the default generator of a device, as a byte tensor (a copy).
char* pzt_rng_get_state(int device, torch::Tensor** out) {
  PZT_TRY
  auto gen = at::globalContext().defaultGenerator(make_device(device));
  std::lock_guard<std::mutex> lock(gen.mutex());
  *out = new torch::Tensor(gen.get_state());
  PZT_CATCH
}

char* pzt_rng_set_state(int device, torch::Tensor* state) {
  PZT_TRY
  auto gen = at::globalContext().defaultGenerator(make_device(device));
  std::lock_guard<std::mutex> lock(gen.mutex());
  gen.set_state(*state);
  PZT_CATCH
}

// Draws from a fresh generator seeded with `seed` (the default generator is left untouched).
// kind: 0 = uniform [0, 1), 1 = standard normal.
char* pzt_seeded_random(uint64_t seed, int kind, const int64_t* dims, int ndims, int scalar_type,
                        int device, torch::Tensor** out) {
  PZT_TRY
  auto dev = make_device(device);
  auto gen = at::globalContext().defaultGenerator(dev).clone();
  gen.set_current_seed(seed);
  auto opts = torch::TensorOptions().dtype(static_cast<at::ScalarType>(scalar_type)).device(dev);
  std::vector<int64_t> shape(dims, dims + ndims);
  torch::Tensor t;
  if (kind == 0) {
    t = at::rand(shape, gen, opts);
  } else {
    t = at::randn(shape, gen, opts);
  }
  *out = new torch::Tensor(t);
  PZT_CATCH
}

}  // extern "C"

extern "C" const char* pzt_torch_version() {
#ifdef TORCH_VERSION
  return TORCH_VERSION;
#else
  return "unknown";
#endif
}

// Meta tensors (shapes and dtypes only, no storage): what `pzt plan` runs shape inference on.
extern "C" bool pzt_is_meta(torch::Tensor* t) { return t->is_meta(); }

extern "C" char* pzt_meta_empty(const int64_t* dims, int ndims, int scalar_type,
                                torch::Tensor** out) {
  try {
    std::vector<int64_t> shape(dims, dims + ndims);
    auto opts = torch::TensorOptions()
                    .dtype(static_cast<at::ScalarType>(scalar_type))
                    .device(c10::Device(c10::DeviceType::Meta));
    *out = new torch::Tensor(at::empty(shape, opts));
    return nullptr;
  } catch (const std::exception& e) {
    return dup_error(e.what());
  }
}

extern "C" char* pzt_to_meta(torch::Tensor* t, torch::Tensor** out) {
  try {
    *out = new torch::Tensor(t->to(c10::Device(c10::DeviceType::Meta)));
    return nullptr;
  } catch (const std::exception& e) {
    return dup_error(e.what());
  }
}

// One AdamW step over a group of parameters with libtorch's fused kernel (`_fused_adamw_`),
// updating params, exp_avgs and exp_avg_sqs in place. `step` is the step number after this
// update (the kernel reads it for the bias corrections; it does not increment it).
extern "C" char* pzt_fused_adamw(torch::Tensor** params, torch::Tensor** grads, torch::Tensor** m,
                                 torch::Tensor** v, int n, double step, double lr, double beta1,
                                 double beta2, double weight_decay, double eps) {
  try {
    std::vector<at::Tensor> p, g, mm, vv, steps;
    for (int i = 0; i < n; ++i) {
      p.push_back(*params[i]);
      g.push_back(*grads[i]);
      mm.push_back(*m[i]);
      vv.push_back(*v[i]);
      steps.push_back(at::full({}, step, params[i]->options().dtype(at::kFloat)));
    }
    at::NoGradGuard ng;
    at::_fused_adamw_(p, g, mm, vv, {}, steps, lr, beta1, beta2, weight_decay, eps, false, false);
    return nullptr;
  } catch (const std::exception& e) {
    return dup_error(e.what());
  }
}

// Activation checkpointing: a custom autograd function whose forward output was computed by
// Rust under no_grad (nothing inside is kept for backward but the input), and whose backward
// re-runs a Rust callback with grad enabled (under the autocast state of the forward) and back-propagates
// through the recomputed graph. Gradients for the parameters inside the segment flow through the
// function's extra inputs, so autograd accumulates them into the parameters as usual.
//
// The callback: `char* cb(void* data, torch::Tensor* x, bool recompute, torch::Tensor** out)`;
// it takes ownership of `x`, gives ownership of `*out`, and returns a message made with
// pzt_message on failure. `drop(data)` runs when the last holder of the callback goes away.
typedef char* (*pzt_segment_fn)(void*, torch::Tensor*, bool, torch::Tensor**);
typedef void (*pzt_drop_fn)(void*);

extern "C" char* pzt_message(const char* s) { return dup_error(std::string(s)); }

namespace {
struct Segment : torch::CustomClassHolder {
  pzt_segment_fn fn;
  pzt_drop_fn drop;
  void* data;
  torch::Tensor output;  // the forward's result, computed by the caller under no_grad
  bool autocast_cpu, autocast_cuda;
  at::ScalarType dtype_cpu, dtype_cuda;
  Segment(pzt_segment_fn f, pzt_drop_fn d, void* p) : fn(f), drop(d), data(p) {
    autocast_cpu = at::autocast::is_autocast_enabled(at::kCPU);
    autocast_cuda = at::autocast::is_autocast_enabled(at::kCUDA);
    dtype_cpu = at::autocast::get_autocast_dtype(at::kCPU);
    dtype_cuda = at::autocast::get_autocast_dtype(at::kCUDA);
  }
  ~Segment() override { drop(data); }
  torch::Tensor call(const torch::Tensor& x, bool recompute) {
    torch::Tensor* out = nullptr;
    char* err = fn(data, new torch::Tensor(x), recompute, &out);
    if (err != nullptr) {
      std::string msg(err);
      free(err);
      throw std::runtime_error(msg);
    }
    if (out == nullptr) throw std::runtime_error("checkpointed segment returned no tensor");
    torch::Tensor y = *out;
    delete out;
    return y;
  }
};

// Restores an autocast state for the lifetime of the guard.
struct AutocastAs {
  bool cpu, cuda;
  at::ScalarType dcpu, dcuda;
  AutocastAs(const Segment& s) {
    cpu = at::autocast::is_autocast_enabled(at::kCPU);
    cuda = at::autocast::is_autocast_enabled(at::kCUDA);
    dcpu = at::autocast::get_autocast_dtype(at::kCPU);
    dcuda = at::autocast::get_autocast_dtype(at::kCUDA);
    at::autocast::set_autocast_enabled(at::kCPU, s.autocast_cpu);
    at::autocast::set_autocast_enabled(at::kCUDA, s.autocast_cuda);
    at::autocast::set_autocast_dtype(at::kCPU, s.dtype_cpu);
    at::autocast::set_autocast_dtype(at::kCUDA, s.dtype_cuda);
  }
  ~AutocastAs() {
    at::autocast::set_autocast_enabled(at::kCPU, cpu);
    at::autocast::set_autocast_enabled(at::kCUDA, cuda);
    at::autocast::set_autocast_dtype(at::kCPU, dcpu);
    at::autocast::set_autocast_dtype(at::kCUDA, dcuda);
  }
};

struct Recompute : torch::autograd::Function<Recompute> {
  static torch::autograd::variable_list forward(torch::autograd::AutogradContext* ctx,
                                                torch::Tensor x, at::TensorList params,
                                                c10::intrusive_ptr<Segment> seg) {
    torch::Tensor y = seg->output;
    seg->output = torch::Tensor();
    if (y.is_same(x)) y = y.clone();
    std::vector<torch::Tensor> saved{x};
    saved.insert(saved.end(), params.begin(), params.end());
    ctx->save_for_backward(saved);
    ctx->saved_data["segment"] =
        c10::IValue::make_capsule(c10::intrusive_ptr<torch::CustomClassHolder>(seg));
    ctx->saved_data["x_grad"] = x.requires_grad();
    return {y};
  }

  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grad_out) {
    auto saved = ctx->get_saved_variables();
    auto holder = ctx->saved_data["segment"].toCapsule();
    auto* seg = static_cast<Segment*>(holder.get());
    bool x_grad = ctx->saved_data["x_grad"].toBool();
    torch::Tensor x = saved[0].detach();
    if (x_grad) x.requires_grad_(true);
    torch::Tensor y;
    {
      torch::AutoGradMode on(true);
      AutocastAs ac(*seg);
      y = seg->call(x, true);
    }
    std::vector<torch::Tensor> wrt;
    if (x_grad) wrt.push_back(x);
    for (size_t i = 1; i < saved.size(); ++i) wrt.push_back(saved[i]);
    torch::autograd::variable_list grads;
    if (y.requires_grad() && !wrt.empty()) {
      grads = torch::autograd::grad({y}, wrt, {grad_out[0]}, false, false, true);
    } else {
      grads = torch::autograd::variable_list(wrt.size());
    }
    torch::autograd::variable_list out;
    size_t k = 0;
    out.push_back(x_grad ? grads[k++] : torch::Tensor());
    for (size_t i = 1; i < saved.size(); ++i) out.push_back(grads[k++]);
    out.push_back(torch::Tensor());  // the segment
    return out;
  }
};
}  // namespace

// Attaches a checkpointed segment to the graph: `y` is its output on `x`, computed by the
// caller under no_grad; `params` are the trainable tensors inside it.
extern "C" char* pzt_checkpointed(torch::Tensor* x, torch::Tensor** params, int n,
                                  torch::Tensor* y, pzt_segment_fn fn, pzt_drop_fn drop,
                                  void* data, torch::Tensor** out) {
  c10::intrusive_ptr<Segment> seg;
  try {
    seg = c10::make_intrusive<Segment>(fn, drop, data);
    seg->output = *y;
  } catch (const std::exception& e) {
    drop(data);
    return dup_error(e.what());
  }
  try {
    torch::autograd::variable_list ps;
    for (int i = 0; i < n; ++i) ps.push_back(*params[i]);
    auto ys = Recompute::apply(*x, at::TensorList(ps), seg);
    *out = new torch::Tensor(ys[0]);
    return nullptr;
  } catch (const std::exception& e) {
    return dup_error(e.what());
  } catch (...) {
    return dup_error("unknown C++ exception");
  }
}

extern "C" bool pzt_grad_enabled() { return at::GradMode::is_enabled(); }

// Drops the gradients of `params` (PyTorch's `zero_grad(set_to_none=True)`): the next backward
// hands each parameter its gradient buffer instead of adding into a zeroed one.
extern "C" char* pzt_clear_grads(torch::Tensor** params, int n) {
  PZT_TRY
  for (int i = 0; i < n; ++i) params[i]->mutable_grad().reset();
  PZT_CATCH
}

// The L2 norm of each of `grads` (computed in float32 or wider, like `clip_grad_norm_`), into
// `out[0..n]`, with one transfer to the host.
extern "C" char* pzt_grad_norms(torch::Tensor** grads, int n, double* out) {
  PZT_TRY
  if (n == 0) return nullptr;
  at::NoGradGuard ng;
  std::vector<at::Tensor> g;
  for (int i = 0; i < n; ++i) g.push_back(*grads[i]);
  std::vector<at::Tensor> norms;
  for (const auto& t : g) {
    auto kind = t.scalar_type() == at::kDouble ? at::kDouble : at::kFloat;
    norms.push_back(at::linalg_vector_norm(t, 2, std::nullopt, false, kind));
  }
  auto all = at::stack(norms).to(at::kCPU, at::kDouble).contiguous();
  memcpy(out, all.data_ptr<double>(), sizeof(double) * static_cast<size_t>(n));
  PZT_CATCH
}

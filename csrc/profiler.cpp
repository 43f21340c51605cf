// pzt's profiler hooks: libtorch's Kineto profiler (the one behind `torch.profiler`), started
// and stopped from Rust. Stopping writes a Chrome trace (for Perfetto or chrome://tracing) and
// returns a table of the operators by self time, like `key_averages().table()`.
#include <torch/csrc/autograd/profiler_kineto.h>
#include <torch/torch.h>
#include <algorithm>
#include <cstring>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace {
namespace prof = torch::autograd::profiler;
namespace impl = torch::profiler::impl;

char* dup_text(const std::string& s) {
  char* out = static_cast<char*>(malloc(s.size() + 1));
  if (out != nullptr) memcpy(out, s.c_str(), s.size() + 1);
  return out;
}

impl::ProfilerConfig config(bool shapes) {
  return impl::ProfilerConfig(impl::ProfilerState::KINETO, shapes, false, false, false, false);
}

std::set<impl::ActivityType> activities() {
  std::set<impl::ActivityType> a{impl::ActivityType::CPU};
  if (torch::cuda::is_available()) a.insert(impl::ActivityType::CUDA);
  return a;
}

struct Row {
  double self_ns = 0, total_ns = 0;
  int64_t calls = 0;
};

struct Span {
  uint64_t start, end, tid;
  std::string key;
};

// Self time per key: on each thread, an event's duration minus that of the events nested
// directly inside it.
std::vector<std::pair<std::string, Row>> rows(const std::vector<Span>& spans) {
  std::vector<size_t> order(spans.size());
  for (size_t i = 0; i < order.size(); ++i) order[i] = i;
  std::sort(order.begin(), order.end(), [&](size_t a, size_t b) {
    const Span &x = spans[a], &y = spans[b];
    if (x.tid != y.tid) return x.tid < y.tid;
    if (x.start != y.start) return x.start < y.start;
    return x.end > y.end;
  });
  std::vector<double> self(spans.size());
  std::vector<size_t> stack;
  uint64_t tid = 0;
  for (size_t i : order) {
    const Span& s = spans[i];
    if (stack.empty() || s.tid != tid) stack.clear();
    tid = s.tid;
    while (!stack.empty() && spans[stack.back()].end <= s.start) stack.pop_back();
    self[i] = static_cast<double>(s.end - s.start);
    if (!stack.empty()) self[stack.back()] -= self[i];
    stack.push_back(i);
  }
  std::map<std::string, Row> by;
  for (size_t i = 0; i < spans.size(); ++i) {
    Row& r = by[spans[i].key];
    r.self_ns += self[i];
    r.total_ns += static_cast<double>(spans[i].end - spans[i].start);
    r.calls += 1;
  }
  std::vector<std::pair<std::string, Row>> out(by.begin(), by.end());
  std::sort(out.begin(), out.end(),
            [](const auto& a, const auto& b) { return a.second.self_ns > b.second.self_ns; });
  return out;
}

void table(std::ostringstream& o, const std::vector<Span>& spans, size_t top, const char* what) {
  auto rs = rows(spans);
  double all = 0;
  for (const auto& r : rs) all += r.second.self_ns;
  o << "| " << what << " | self ms | self % | total ms | calls |\n|---|---|---|---|---|\n";
  for (size_t i = 0; i < rs.size() && i < top; ++i) {
    const Row& r = rs[i].second;
    char line[160];
    snprintf(line, sizeof line, " | %.2f | %.1f | %.2f | %lld |\n", r.self_ns / 1e6,
             all > 0 ? 100.0 * r.self_ns / all : 0.0, r.total_ns / 1e6,
             static_cast<long long>(r.calls));
    o << "| " << rs[i].first << line;
  }
}

std::string shapes_of(const prof::KinetoEvent& e) {
  if (!e.hasShapes()) return "";
  std::ostringstream o;
  o << " [";
  bool first = true;
  for (const auto& s : e.shapes()) {
    if (!first) o << ", ";
    first = false;
    o << "(";
    for (size_t k = 0; k < s.size(); ++k) o << (k ? "," : "") << s[k];
    o << ")";
  }
  o << "]";
  return o.str();
}
}  // namespace

extern "C" char* pzt_profiler_start(bool shapes) {
  try {
    prof::prepareProfiler(config(shapes), activities());
    prof::enableProfiler(config(shapes), activities());
    return nullptr;
  } catch (const std::exception& e) {
    return dup_text(e.what());
  }
}

// Stops the profiler, writes the trace to `path` (when not null) and puts the tables (by
// operator, and by operator and input shapes) in `*report` (freed with pzt_free_error).
extern "C" char* pzt_profiler_stop(const char* path, int top, char** report) {
  try {
    auto result = prof::disableProfiler();
    if (!result) return dup_text("the profiler was not running");
    std::vector<Span> by_name, by_shape;
    for (const auto& e : result->events()) {
      if (e.deviceType() != c10::DeviceType::CPU || e.endNs() < e.startNs()) continue;
      std::string name = e.name();
      by_name.push_back({e.startNs(), e.endNs(), e.startThreadId(), name});
      by_shape.push_back({e.startNs(), e.endNs(), e.startThreadId(), name + shapes_of(e)});
    }
    std::ostringstream o;
    table(o, by_name, static_cast<size_t>(top), "operator");
    o << "\n";
    table(o, by_shape, static_cast<size_t>(top), "operator [input shapes]");
    *report = dup_text(o.str());
    if (path != nullptr) result->save(path);
    return nullptr;
  } catch (const std::exception& e) {
    return dup_text(e.what());
  }
}

// The profiler's thread-local recording and its table.
#include "core/profiler.h"

#include <algorithm>
#include <mutex>

#include "core/error.h"

namespace vgrad::profiler {
namespace detail {
namespace {
thread_local bool active_ = false;
thread_local int depth = 0;
thread_local int64_t bytes_allocated_ = 0;
thread_local int64_t live_bytes = 0;  // allocated minus released while profiling
thread_local int64_t peak_live = 0;
thread_local std::map<std::string, OpStats>* table = nullptr;
}  // namespace

bool active() { return active_; }
bool enter() { return depth++ == 0; }
void leave() { --depth; }
int64_t bytes_allocated() { return bytes_allocated_; }
void add_bytes(int64_t bytes) {
  if (!active_) return;
  bytes_allocated_ += bytes;
  live_bytes += bytes;
  if (live_bytes > peak_live) peak_live = live_bytes;
}
void remove_bytes(int64_t bytes) {
  if (active_) live_bytes -= bytes;
}
int64_t start_peak() { return peak_live = live_bytes; }
int64_t peak_live_bytes() { return peak_live; }

void add(const char* name, const char* suffix, double seconds, int64_t bytes, int64_t peak_bytes) {
  if (!table) return;
  std::string key = suffix[0] ? std::string(name) + " " + suffix : std::string(name);
  OpStats& s = (*table)[key];
  s.name = std::move(key);
  s.calls++;
  s.seconds += seconds;
  s.bytes_allocated += bytes;
  if (peak_bytes > s.peak_bytes) s.peak_bytes = peak_bytes;
}
}  // namespace detail

Profile::Profile() : table_(std::make_unique<std::map<std::string, OpStats>>()) {
  if (detail::active_) fail("profiler: a Profile is already recording on this thread");
  detail::table = table_.get();
  detail::active_ = true;
  detail::depth = 0;
}

Profile::~Profile() { stop(); }

void Profile::stop() {
  if (stopped_) return;
  stopped_ = true;
  detail::active_ = false;
  detail::table = nullptr;
}

std::vector<OpStats> Profile::stats() const {
  std::vector<OpStats> out;
  for (const auto& [name, s] : *table_) out.push_back(s);
  std::sort(out.begin(), out.end(), [](const OpStats& a, const OpStats& b) { return a.seconds > b.seconds; });
  return out;
}

std::string Profile::table(size_t max_rows) const {
  const auto all = stats();
  double total = 0;
  for (const auto& s : all) total += s.seconds;
  std::string out = fmt::format("{:<28} {:>8} {:>11} {:>7} {:>11} {:>12} {:>9}\n", "op", "calls", "total ms", "%",
                                "us/call", "MB alloc", "peak MB");
  for (size_t i = 0; i < all.size() && i < max_rows; ++i) {
    const auto& s = all[i];
    out += fmt::format("{:<28} {:>8} {:>11.2f} {:>6.1f}% {:>11.2f} {:>12.2f} {:>9.2f}\n", s.name, s.calls,
                       1e3 * s.seconds, total > 0 ? 100 * s.seconds / total : 0.0, 1e6 * s.seconds / double(s.calls),
                       double(s.bytes_allocated) / 1e6, double(s.peak_bytes) / 1e6);
  }
  out += fmt::format("{:<28} {:>8} {:>11.2f}\n", "total (outermost ops)", "", 1e3 * total);
  return out;
}

}  // namespace vgrad::profiler

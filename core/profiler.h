// vgrad::profiler: per-op call counts, time, bytes allocated and peak memory (the
// largest rise of live bytes above the op's start, on this thread), forward and
// backward separately, printed as a table sorted by time (like torch.profiler's
// key averages). Off by default; an inactive check costs one thread-local load.
//
//   vgrad::profiler::Profile profile;            // records until destroyed or stop()
//   train_step();
//   std::cout << profile.table();                // or profile.stats()
//
// Only the outermost op is recorded (var calls mean calls sum: the time goes to var),
// and "<op> backward" is the op's rule as the engine ran it. Single-threaded view:
// ops run on other threads (the data loader's) are not recorded.
#pragma once
#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace vgrad::profiler {

struct OpStats {
  std::string name;
  int64_t calls = 0;
  double seconds = 0;
  int64_t bytes_allocated = 0;
  int64_t peak_bytes = 0;  // the largest rise of live bytes during one call
};

class Profile {
 public:
  Profile();
  ~Profile();
  Profile(const Profile&) = delete;
  Profile& operator=(const Profile&) = delete;
  void stop();
  std::vector<OpStats> stats() const;  // sorted by time, largest first
  std::string table(size_t max_rows = 30) const;

 private:
  bool stopped_ = false;
  // Owned here, not by the thread: a stopped Profile keeps its rows while a later one records.
  std::unique_ptr<std::map<std::string, OpStats>> table_;
};

namespace detail {
// Out of line: thread_local variables read across translation units trip UBSan's
// null check in GCC 12 (a false positive in the TLS wrapper), so they stay in profiler.cpp.
bool active();
bool enter();  // true for the outermost scope of an active Profile
void leave();
int64_t bytes_allocated();
void add_bytes(int64_t bytes);
void remove_bytes(int64_t bytes);
// Starts a new peak at the live bytes now and returns them.
int64_t start_peak();
int64_t peak_live_bytes();
void add(const char* name, const char* suffix, double seconds, int64_t bytes, int64_t peak_bytes);
}  // namespace detail

// Records the enclosing op when a Profile is active (see VGRAD_PROFILE_OP).
class Scope {
 public:
  explicit Scope(const char* name, const char* suffix = "") {
    if (!detail::active()) return;
    entered_ = true;
    if (!detail::enter()) return;
    name_ = name;
    suffix_ = suffix;
    bytes_ = detail::bytes_allocated();
    live_at_start_ = detail::start_peak();
    start_ = std::chrono::steady_clock::now();
  }
  ~Scope() {
    if (!entered_) return;
    detail::leave();
    if (name_ == nullptr) return;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    detail::add(name_, suffix_, seconds, detail::bytes_allocated() - bytes_, detail::peak_live_bytes() - live_at_start_);
  }
  Scope(const Scope&) = delete;
  Scope& operator=(const Scope&) = delete;

 private:
  bool entered_ = false;
  const char* name_ = nullptr;
  const char* suffix_ = "";
  int64_t bytes_ = 0;
  int64_t live_at_start_ = 0;
  std::chrono::steady_clock::time_point start_;
};

// Called by the allocator for every allocation and release on this thread.
inline void note_allocation(int64_t bytes) { detail::add_bytes(bytes); }
inline void note_deallocation(int64_t bytes) { detail::remove_bytes(bytes); }

}  // namespace vgrad::profiler

#define VGRAD_PROFILE_CONCAT_(a, b) a##b
#define VGRAD_PROFILE_CONCAT(a, b) VGRAD_PROFILE_CONCAT_(a, b)
// First line of a public op: times it (and what it calls) when profiling.
#define VGRAD_PROFILE_OP(name) ::vgrad::profiler::Scope VGRAD_PROFILE_CONCAT(vgrad_profile_scope_, __LINE__)(name)

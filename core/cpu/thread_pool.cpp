// The CPU worker pool (thread_pool.h). Wait policy: a worker spins for 200 us after each
// job, so the GEMMs of one training step (tens of microseconds apart) find it awake, then
// sleeps on a futex (std::atomic::wait) so an idle program does not burn the other core.
// Measured on the 2-vCPU EPYC (Zen 5): waking a sleeping worker costs ~30-60 us here,
// more than a whole batch-64 forward GEMM, hence the spin.
#include "core/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>
#include <cstdlib>

#include "core/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace vgrad::cpu {
namespace {

using Clock = std::chrono::steady_clock;
// Back-off: a job whose workers finish more than half the caller's own time (plus
// kLateSlack) after the caller makes the next jobs run on the caller alone, then threads
// are tried again. How many: kMinAloneJobs after an isolated late job, doubled by each late
// job that follows a back-off up to kMaxAloneJobs (about 16 training steps of an MLP),
// halved again by each kMinAloneJobs jobs in a row the workers finish in time. A fixed 256 after every late job
// kept batch 128 and 256 on one thread almost all the time on this shared 2-vCPU machine
// (vgrad_bench --batch 128: 8370 of 8442 threaded jobs backed off, 0.296 s/epoch vs 0.318
// one thread): a worker that lost its core now and then (descheduled for 50 us to
// 7 ms, seen with the loader's prefetch thread on or off) cost 256 jobs each time. Under sustained load (load average 8: vgrad_bench, s/epoch at
// batch 32/64/256) the 256-job back-off gave 0.95-0.98 / 0.79-0.80 / 0.76-0.86, one thread
// 0.86-0.90 / 0.72-0.77 / 0.65-0.75, 16 jobs 0.96-1.15 / 0.79-0.80 / 0.80-0.94: the doubling
// reaches the long back-off there within a few late jobs.
constexpr auto kLateSlack = std::chrono::microseconds(5);
constexpr int kMinAloneJobs = 16, kMaxAloneJobs = 256, kUnjudgedJobsAfterSleep = 4;

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool& ThreadPool::instance() {
  // OPENBLAS_NUM_THREADS too, so `OPENBLAS_NUM_THREADS=1 mpirun ...` (README) still
  // keeps each rank on one thread now that most float32 GEMMs run here.
  static ThreadPool pool([] {
    for (const char* variable : {"VGRAD_CPU_THREADS", "OPENBLAS_NUM_THREADS"}) {
      const char* setting = std::getenv(variable);
      if (setting == nullptr || *setting == '\0') continue;
      char* end = nullptr;
      const long threads = std::strtol(setting, &end, 10);
      if (*end != '\0' || threads < 1 || threads > 1024)
        fail("{}={}: expected a thread count from 1 to 1024", variable, setting);
      return int(threads);
    }
    return int(std::max(1u, std::thread::hardware_concurrency()));
  }());
  return pool;
}

ThreadPool::ThreadPool(int threads, std::chrono::microseconds spin) : spin_(spin) {
  for (int i = 0; i + 1 < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::end_back_off() {
  std::lock_guard<std::mutex> lock(busy_);
  alone_for_jobs_ = 0;
  alone_penalty_ = 0;
  on_time_jobs_ = 0;
}

ThreadPool::Counts ThreadPool::counts() const {
  return {threaded_jobs_.load(std::memory_order_relaxed), backed_off_jobs_.load(std::memory_order_relaxed),
          worker_pieces_.load(std::memory_order_relaxed)};
}

void ThreadPool::take_pieces(uint32_t job, bool on_worker) {
  uint64_t ticket = ticket_.load();
  while (uint32_t(ticket >> 32) == job && (ticket & 0xffff) < ((ticket >> 16) & 0xffff)) {
    if (!ticket_.compare_exchange_weak(ticket, ticket + 1)) continue;  // ticket reloaded
    fn_(context_, int(ticket & 0xffff));
    if (on_worker) worker_pieces_.fetch_add(1, std::memory_order_relaxed);
    done_.fetch_add(1, std::memory_order_release);
    ticket = ticket_.load();
  }
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    // Spin a while for the next job, then sleep until one is published.
    const auto deadline = Clock::now() + spin_;
    for (int polls = 0; generation_.load(std::memory_order_acquire) == seen; ++polls) {
      cpu_relax();
      if (polls % 64 == 63 && Clock::now() > deadline) {
        sleepers_.fetch_add(1);
        generation_.wait(seen);
        sleepers_.fetch_sub(1);
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    if (index < helpers_.load()) take_pieces(seen, true);
  }
}

void ThreadPool::run_erased(int pieces, int threads, Piece fn, void* context) {
  std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
  const int helpers = std::min(threads - 1, int(workers_.size()));
  const bool backing_off = lock.owns_lock() && alone_for_jobs_ > 0;
  if (backing_off) --alone_for_jobs_;
  if (helpers > 0 && pieces > 1) {
    threaded_jobs_.fetch_add(1, std::memory_order_relaxed);
    if (backing_off) backed_off_jobs_.fetch_add(1, std::memory_order_relaxed);
  }
  if (!lock.owns_lock() || helpers <= 0 || pieces <= 1 || backing_off) {
    for (int i = 0; i < pieces; ++i) fn(context, i);
    return;
  }
  if (pieces > 0xffff) fail("thread pool: {} pieces exceed the limit of 65535", pieces);
  fn_ = fn, context_ = context;
  helpers_.store(helpers);
  done_.store(0);
  const uint32_t job = generation_.load() + 1;
  ticket_.store(uint64_t(job) << 32 | uint64_t(pieces) << 16);
  generation_.store(job);  // seq_cst: a worker going to sleep either sees it or is woken
  const bool workers_asleep = sleepers_.load() > 0;
  if (workers_asleep) generation_.notify_all();
  const auto start = Clock::now();
  take_pieces(job, false);
  const auto own_done = Clock::now();
  for (int polls = 0; done_.load(std::memory_order_acquire) < pieces; ++polls) {
    cpu_relax();
    if (polls > 4096) std::this_thread::yield();  // a worker lost its core mid-piece
  }
  // A worker that was awake (spinning) and still finishes long after the caller had its
  // core taken away (the other vCPU busy with another program): run the next jobs alone
  // rather than wait again. A worker woken from sleep is late by its wake-up, not by load,
  // and so are the first jobs after it (its core clocks up again): those are not judged.
  if (workers_asleep) {
    unjudged_jobs_ = kUnjudgedJobsAfterSleep;
    return;
  }
  if (unjudged_jobs_ > 0) {
    --unjudged_jobs_;
    return;
  }
  if (Clock::now() - own_done > (own_done - start) / 2 + kLateSlack) {
    alone_penalty_ = std::clamp(alone_penalty_ * 2, kMinAloneJobs, kMaxAloneJobs);
    alone_for_jobs_ = alone_penalty_;
    on_time_jobs_ = 0;
  } else if (++on_time_jobs_ == kMinAloneJobs) {
    alone_penalty_ /= 2;
    on_time_jobs_ = 0;
  }
}

}  // namespace vgrad::cpu

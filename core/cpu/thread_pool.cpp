// The CPU worker pool (thread_pool.h). Wait policy: a worker spins for kSpin after each
// job, so the GEMMs of one training step (tens of microseconds apart) find it awake, then
// sleeps on a futex (std::atomic::wait) so an idle program does not burn the other core.
// Measured on the 2-vCPU EPYC (Zen 5): waking a sleeping worker costs ~30-60 us here,
// more than a whole batch-64 forward GEMM, hence the spin.
#include "core/cpu/thread_pool.h"

#include <algorithm>
#include <chrono>

#include "core/error.h"

#if defined(__x86_64__)
#include <immintrin.h>
#endif

namespace vgrad::cpu {
namespace {

constexpr auto kSpin = std::chrono::microseconds(200);

inline void cpu_relax() {
#if defined(__x86_64__)
  _mm_pause();
#endif
}

}  // namespace

ThreadPool& ThreadPool::instance() {
  static ThreadPool pool(int(std::max(1u, std::thread::hardware_concurrency())));
  return pool;
}

ThreadPool::ThreadPool(int threads) {
  for (int i = 0; i + 1 < threads; ++i) workers_.emplace_back([this, i] { worker_loop(i); });
}

ThreadPool::~ThreadPool() {
  stop_.store(true);
  generation_.fetch_add(1);
  generation_.notify_all();
  for (std::thread& t : workers_) t.join();
}

void ThreadPool::take_pieces(uint32_t job) {
  uint64_t ticket = ticket_.load();
  while (uint32_t(ticket >> 32) == job && (ticket & 0xffff) < ((ticket >> 16) & 0xffff)) {
    if (!ticket_.compare_exchange_weak(ticket, ticket + 1)) continue;  // ticket reloaded
    fn_(context_, int(ticket & 0xffff));
    done_.fetch_add(1, std::memory_order_release);
    ticket = ticket_.load();
  }
}

void ThreadPool::worker_loop(int index) {
  uint32_t seen = 0;
  for (;;) {
    // Spin a while for the next job, then sleep until one is published.
    const auto deadline = std::chrono::steady_clock::now() + kSpin;
    for (int polls = 0; generation_.load(std::memory_order_acquire) == seen; ++polls) {
      cpu_relax();
      if (polls % 64 == 63 && std::chrono::steady_clock::now() > deadline) {
        sleepers_.fetch_add(1);
        generation_.wait(seen);
        sleepers_.fetch_sub(1);
      }
    }
    seen = generation_.load(std::memory_order_acquire);
    if (stop_.load()) return;
    if (index < helpers_.load()) take_pieces(seen);
  }
}

void ThreadPool::run_erased(int pieces, int threads, Piece fn, void* context) {
  std::unique_lock<std::mutex> lock(busy_, std::try_to_lock);
  const int helpers = std::min(threads - 1, int(workers_.size()));
  if (!lock.owns_lock() || helpers <= 0 || pieces <= 1) {
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
  if (sleepers_.load() > 0) generation_.notify_all();
  take_pieces(job);
  while (done_.load(std::memory_order_acquire) < pieces) cpu_relax();
}

}  // namespace vgrad::cpu

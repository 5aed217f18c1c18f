// The CPU backend's persistent worker threads: one per hardware thread, the caller being
// one of them, started once. A job is split into pieces that the caller and the workers
// take one at a time, so a worker that wakes late (the other core busy) simply takes
// fewer. Not a general task system: one job at a time, no nesting, no futures.
#pragma once
#include <atomic>
#include <cstdint>
#include <mutex>
#include <thread>
#include <chrono>
#include <vector>

namespace vgrad::cpu {

class ThreadPool {
 public:
  // The process-wide pool, sized to std::thread::hardware_concurrency() unless
  // VGRAD_CPU_THREADS (or else OPENBLAS_NUM_THREADS) says otherwise (1: every kernel on
  // the calling thread).
  static ThreadPool& instance();
  // threads counts the caller: threads - 1 workers. An idle worker spins for `spin` before
  // it sleeps (tests keep workers awake with a long one).
  explicit ThreadPool(int threads, std::chrono::microseconds spin = std::chrono::microseconds(200));
  ~ThreadPool();
  ThreadPool(const ThreadPool&) = delete;
  ThreadPool& operator=(const ThreadPool&) = delete;

  int threads() const { return int(workers_.size()) + 1; }
  // Calls piece(i) for i in [0, pieces), on the calling thread and up to `threads` - 1
  // workers, and returns when all are done. A second caller while a job runs (another
  // thread of the program) runs its pieces alone rather than wait; so do the next few
  // jobs after one whose workers came late (their core busy elsewhere).
  template <class Fn> void run(int pieces, int threads, Fn&& piece) {
    run_erased(pieces, threads, [](void* fn, int i) { (*static_cast<Fn*>(fn))(i); }, &piece);
  }

  // Ends a back-off now (benchmarks and tests that must see the threads run).
  void end_back_off();
  // Counts since the pool started: jobs asked for more than one thread, those of them
  // run on the caller alone because of a back-off, and pieces that workers ran.
  struct Counts {
    uint64_t threaded_jobs = 0, backed_off_jobs = 0, worker_pieces = 0;
  };
  Counts counts() const;

 private:
  using Piece = void (*)(void*, int);
  void run_erased(int pieces, int threads, Piece fn, void* context);
  void worker_loop(int index);
  void take_pieces(uint32_t job, bool on_worker);

  std::vector<std::thread> workers_;
  const std::chrono::microseconds spin_;
  std::mutex busy_;  // held by the caller of the running job
  // generation_ wakes the workers (a futex word); ticket_ holds the running job as one
  // word, job id << 32 | pieces << 16 | next piece, so a worker that claims a piece by
  // compare-exchange can never take one of a later job or one past the end.
  std::atomic<uint32_t> generation_{0};
  std::atomic<uint64_t> ticket_{0};
  std::atomic<int> sleepers_{0}, done_{0}, helpers_{0};
  Piece fn_ = nullptr;  // stable while any piece of the job is unclaimed or running
  void* context_ = nullptr;
  std::atomic<bool> stop_{false};
  int alone_for_jobs_ = 0;  // jobs to run without workers after a late one (under busy_)
  int alone_penalty_ = 0;   // the last back-off's length: doubles while workers stay late (under busy_)
  int on_time_jobs_ = 0;    // judged jobs in a row the workers finished in time (under busy_)
  int unjudged_jobs_ = 0;   // jobs not judged after workers were woken (under busy_)
  std::atomic<uint64_t> threaded_jobs_{0}, backed_off_jobs_{0}, worker_pieces_{0};
};

// Calls item(i) for every i in [0, count) on the process-wide pool, in at most 1024
// contiguous ranges (any count, where run() takes at most 65535 pieces). For kernels
// whose items are independent (a channel, a row of im2col's output).
template <class Fn> void parallel_for(int64_t count, Fn&& item) {
  if (count <= 0) return;
  ThreadPool& pool = ThreadPool::instance();
  const int64_t pieces = count < 1024 ? count : 1024;
  pool.run(int(pieces), pool.threads(), [&](int piece) {
    for (int64_t i = piece * count / pieces; i < (piece + 1) * count / pieces; ++i) item(i);
  });
}

}  // namespace vgrad::cpu

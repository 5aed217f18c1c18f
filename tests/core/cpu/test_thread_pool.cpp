// The CPU worker pool (core/cpu/thread_pool.h): every piece runs exactly once, on more
// than one thread when asked, and callers from several threads at once all finish.
#include "core/cpu/thread_pool.h"

#include <gtest/gtest.h>

#include <atomic>
#include <chrono>
#include <mutex>
#include <set>
#include <thread>
#include <vector>

namespace vgrad::cpu {
namespace {

TEST(ThreadPool, EveryPieceRunsExactlyOnce) {
  ThreadPool pool(3);
  EXPECT_EQ(3, pool.threads());
  for (int pieces : {0, 1, 2, 5, 64}) {
    std::vector<std::atomic<int>> runs(static_cast<size_t>(pieces));
    pool.run(pieces, 3, [&](int i) { runs[size_t(i)].fetch_add(1); });
    for (int i = 0; i < pieces; ++i) EXPECT_EQ(1, runs[size_t(i)].load()) << "piece " << i << " of " << pieces;
  }
}

TEST(ThreadPool, WorkersTakePiecesWhileTheCallerIsBusy) {
  ThreadPool pool(2);
  std::mutex mutex;
  std::set<std::thread::id> ran_on;
  // The caller's first piece waits for a worker to have taken the second.
  std::atomic<bool> second_started{false};
  pool.run(2, 2, [&](int i) {
    {
      std::lock_guard<std::mutex> lock(mutex);
      ran_on.insert(std::this_thread::get_id());
    }
    if (i == 1) second_started = true;
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (i == 0 && !second_started && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
  });
  EXPECT_EQ(2u, ran_on.size());
}

TEST(ThreadPool, AfterSleepingWorkersWakeForTheNextJob) {
  ThreadPool pool(2);
  std::this_thread::sleep_for(std::chrono::milliseconds(5));  // past the spin: the worker sleeps
  std::atomic<int> sum{0};
  pool.run(10, 2, [&](int i) { sum += i; });
  EXPECT_EQ(45, sum.load());
}

TEST(ThreadPool, AfterALateWorkerTheNextJobsRunOnTheCaller) {
  // A job that had to wake a sleeping worker is not judged (the worker is late by its
  // wake-up): the worker spins for a minute instead of sleeping, so that on a loaded
  // machine too the late job below is judged.
  ThreadPool pool(2, std::chrono::minutes(1));
  const auto caller = std::this_thread::get_id();
  // The worker's piece takes 20 ms, the caller's none: the caller waits for a late worker.
  std::atomic<bool> worker_ran{false};
  pool.run(2, 2, [&](int) {
    if (std::this_thread::get_id() != caller) {
      worker_ran = true;
      std::this_thread::sleep_for(std::chrono::milliseconds(20));
    } else {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!worker_ran && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    }
  });
  ASSERT_TRUE(worker_ran);
  std::atomic<int> off_caller{0};
  const ThreadPool::Counts before = pool.counts();
  for (int job = 0; job < 8; ++job)
    pool.run(4, 2, [&](int) {
      if (std::this_thread::get_id() != caller) ++off_caller;
    });
  EXPECT_EQ(0, off_caller.load());
  EXPECT_EQ(8u, pool.counts().backed_off_jobs - before.backed_off_jobs);
  EXPECT_EQ(8u, pool.counts().threaded_jobs - before.threaded_jobs);
  EXPECT_EQ(before.worker_pieces, pool.counts().worker_pieces);
  // end_back_off: the next job is offered to the worker again; the caller's piece waits
  // until the worker has taken the other.
  pool.end_back_off();
  std::atomic<bool> worker_ran_again{false};
  pool.run(2, 2, [&](int) {
    if (std::this_thread::get_id() != caller) {
      worker_ran_again = true;
    } else {
      const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
      while (!worker_ran_again && std::chrono::steady_clock::now() < deadline) std::this_thread::yield();
    }
  });
  EXPECT_TRUE(worker_ran_again);
  // The worker ran the other piece, or both when the caller lost its core before taking one.
  EXPECT_LE(before.worker_pieces + 1, pool.counts().worker_pieces);
  EXPECT_GE(before.worker_pieces + 2, pool.counts().worker_pieces);
}

TEST(ThreadPool, CountsPiecesRunByWorkers) {
  ThreadPool pool(2);
  const auto caller = std::this_thread::get_id();
  std::atomic<int> on_worker{0};
  for (int job = 0; job < 20; ++job)
    pool.run(8, 2, [&](int) {
      if (std::this_thread::get_id() != caller) ++on_worker;
    });
  const ThreadPool::Counts counts = pool.counts();
  EXPECT_EQ(uint64_t(on_worker.load()), counts.worker_pieces);
  EXPECT_EQ(20u, counts.threaded_jobs);
  pool.run(8, 1, [](int) {});  // one thread asked for: not a threaded job
  EXPECT_EQ(20u, pool.counts().threaded_jobs);
}

TEST(ThreadPool, ConcurrentCallersAllFinish) {
  ThreadPool pool(2);
  std::atomic<long> total{0};
  std::vector<std::thread> callers;
  for (int t = 0; t < 4; ++t)
    callers.emplace_back([&] {
      for (int job = 0; job < 200; ++job) pool.run(4, 2, [&](int i) { total += i + 1; });
    });
  for (std::thread& c : callers) c.join();
  EXPECT_EQ(4L * 200 * 10, total.load());
}

// parallel_for: every index exactly once, past run()'s 65535-piece limit and below it.
TEST(ThreadPool, ParallelForCoversEveryIndexOnce) {
  for (int64_t count : {int64_t(0), int64_t(1), int64_t(7), int64_t(1024), int64_t(100003)}) {
    std::vector<std::atomic<int>> seen(static_cast<size_t>(count));
    parallel_for(count, [&](int64_t i) { ++seen[size_t(i)]; });
    int64_t wrong = 0;
    for (const auto& s : seen) wrong += s.load() != 1;
    EXPECT_EQ(0, wrong) << "count " << count;
  }
}

}  // namespace
}  // namespace vgrad::cpu

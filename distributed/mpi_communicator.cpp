// The MPI communicator (host tensors), or, in a build without MPI, a factory that
// says how to get one. Each collective runs under a watchdog: past the timeout it
// aborts the job naming this rank and the collective, so a dead peer never hangs a run.
#include "distributed/engines.h"

#include "core/error.h"

#if VGRAD_WITH_MPI
#include <mpi.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <limits>
#include <mutex>
#include <thread>
#endif

namespace vgrad::distributed {

#if VGRAD_WITH_MPI

bool built_with_mpi() { return true; }

namespace {

MPI_Datatype mpi_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return MPI_FLOAT;
    case DType::Float64: return MPI_DOUBLE;
    case DType::Int64: return MPI_INT64_T;
    case DType::BFloat16:  // MPI has no 16-bit float type to sum; master weights and gradients are float32
    case DType::Float16: break;
  }
  fail("mpi: no MPI datatype for dtype {} (convert to float32 first)", dtype_name(dtype));
}

std::string mpi_error_text(int code) {
  char text[MPI_MAX_ERROR_STRING];
  int length = 0;
  MPI_Error_string(code, text, &length);
  return std::string(text, size_t(length));
}

// MPI counts are ints: larger tensors move in pieces of at most this many elements.
constexpr int64_t kMaxCount = int64_t(1) << 30;

void finalize_mpi() {
  int finalized = 0;
  MPI_Finalized(&finalized);
  if (!finalized) MPI_Finalize();
}

class MpiCommunicator final : public Communicator {
 public:
  explicit MpiCommunicator(double timeout_seconds) : timeout_(timeout_seconds) {
    int initialized = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
      int provided = 0;
      // DDP all-reduces on its own thread while the caller may log or barrier.
      if (MPI_Init_thread(nullptr, nullptr, MPI_THREAD_MULTIPLE, &provided) != MPI_SUCCESS)
        fail("mpi: MPI_Init_thread failed");
      std::atexit(finalize_mpi);
      if (provided < MPI_THREAD_SERIALIZED)
        fail("mpi: this MPI library provides thread level {}, vgrad needs MPI_THREAD_SERIALIZED or more", provided);
    }
    MPI_Comm_dup(MPI_COMM_WORLD, &comm_);
    // Errors come back as codes (and then as vgrad errors naming the collective), not as an abort.
    MPI_Comm_set_errhandler(comm_, MPI_ERRORS_RETURN);
    int rank = 0, size = 1, local_rank = 0;
    MPI_Comm_rank(comm_, &rank);
    MPI_Comm_size(comm_, &size);
    MPI_Comm node;
    MPI_Comm_split_type(comm_, MPI_COMM_TYPE_SHARED, rank, MPI_INFO_NULL, &node);
    MPI_Comm_rank(node, &local_rank);
    MPI_Comm_free(&node);
    set_position(rank, size, local_rank);
    watchdog_ = std::thread([this] { watch(); });
  }

  ~MpiCommunicator() override {
    {
      std::lock_guard lock(watch_mutex_);
      stopping_ = true;
    }
    watch_wake_.notify_all();
    watchdog_.join();
    int finalized = 0;
    MPI_Finalized(&finalized);
    if (!finalized) MPI_Comm_free(&comm_);
  }

  std::string name() const override { return "mpi"; }
  Device device() const override { return kCPU; }

  [[noreturn]] void abort(const std::string& why) override {
    std::fprintf(stderr, "vgrad.distributed: %s: %s; aborting all ranks\n", where().c_str(), why.c_str());
    std::fflush(stderr);
    MPI_Abort(MPI_COMM_WORLD, 1);
    std::abort();  // MPI_Abort does not return; this keeps [[noreturn]] honest if it does
  }

 protected:
  void all_reduce_sum(const Tensor& tensor) override {
    char* data = static_cast<char*>(tensor.data_ptr());
    const size_t element = dtype_size(tensor.dtype());
    for (int64_t start = 0; start < tensor.numel(); start += kMaxCount) {
      const int count = int(std::min(kMaxCount, tensor.numel() - start));
      run("all_reduce (sum)", tensor, [&] {
        return MPI_Allreduce(MPI_IN_PLACE, data + start * element, count, mpi_type(tensor.dtype()), MPI_SUM, comm_);
      });
    }
  }

  void broadcast_from(const Tensor& tensor, int root) override {
    char* data = static_cast<char*>(tensor.data_ptr());
    const size_t element = dtype_size(tensor.dtype());
    for (int64_t start = 0; start < tensor.numel(); start += kMaxCount) {
      const int count = int(std::min(kMaxCount, tensor.numel() - start));
      run(fmt::format("broadcast from rank {}", root).c_str(), tensor,
          [&] { return MPI_Bcast(data + start * element, count, mpi_type(tensor.dtype()), root, comm_); });
    }
  }

  void all_gather_into(const Tensor& tensor, const Tensor& out) override {
    if (tensor.numel() > std::numeric_limits<int>::max())
      fail("{}: all_gather: {} elements per rank is more than MPI's int count allows", where(), tensor.numel());
    const MPI_Datatype type = mpi_type(tensor.dtype());
    run("all_gather", tensor, [&] {
      return MPI_Allgather(tensor.data_ptr(), int(tensor.numel()), type, out.data_ptr(), int(tensor.numel()), type,
                           comm_);
    });
  }

  void barrier_impl() override {
    run("barrier", Tensor(), [&] { return MPI_Barrier(comm_); });
  }

  bool accepts(Device device) const override { return device.is_cpu(); }

 private:
  // One MPI call, serialised with the others and watched; a failure code becomes an error naming it.
  template <class Call> void run(const char* collective, const Tensor& tensor, Call&& call) {
    const std::string what =
        tensor.defined() ? fmt::format("{} of {} {} elements {}", collective, tensor.numel(), dtype_name(tensor.dtype()),
                                       shape_str(tensor.shape()))
                         : std::string(collective);
    std::lock_guard call_lock(call_mutex_);
    {
      std::lock_guard lock(watch_mutex_);
      in_flight_ = what;
      started_ = std::chrono::steady_clock::now();
    }
    const int code = call();
    {
      std::lock_guard lock(watch_mutex_);
      in_flight_.clear();
    }
    if (code != MPI_SUCCESS)
      fail("{}: {} failed: {} (a peer rank may have died)", where(), what, mpi_error_text(code));
  }

  // Wakes a few times per timeout; a collective in flight for longer ends the job.
  void watch() {
    const auto period = std::chrono::duration<double>(std::min(1.0, timeout_ / 4));
    std::unique_lock lock(watch_mutex_);
    while (!stopping_) {
      watch_wake_.wait_for(lock, period);
      if (in_flight_.empty()) continue;
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - started_).count();
      if (waited > timeout_) {
        std::fprintf(stderr,
                     "vgrad.distributed: %s: %s has not completed after %.0f s: a peer rank died, hangs, or did not "
                     "reach this collective; aborting all ranks (VGRAD_DISTRIBUTED_TIMEOUT sets the limit)\n",
                     where().c_str(), in_flight_.c_str(), waited);
        std::fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, 1);
      }
    }
  }

  MPI_Comm comm_ = MPI_COMM_NULL;
  double timeout_;
  std::mutex call_mutex_;  // one collective at a time: DDP's thread and the caller's
  std::mutex watch_mutex_;
  std::condition_variable watch_wake_;
  std::string in_flight_;  // the collective now running, "" when none
  std::chrono::steady_clock::time_point started_;
  bool stopping_ = false;
  std::thread watchdog_;
};

}  // namespace

namespace detail {
std::shared_ptr<Communicator> make_mpi_communicator(double timeout_seconds) {
  return std::make_shared<MpiCommunicator>(timeout_seconds);
}
}  // namespace detail

#else

bool built_with_mpi() { return false; }

namespace detail {
std::shared_ptr<Communicator> make_mpi_communicator(double) {
  const Environment environment = read_environment();
  fail("distributed: {} started {} ranks, but this build of vgrad has no MPI support (install libopenmpi-dev and "
       "reconfigure: CMake's find_package(MPI) must succeed)",
       environment.launcher.empty() ? "the launcher" : environment.launcher, environment.world_size);
}
}  // namespace detail

#endif

}  // namespace vgrad::distributed

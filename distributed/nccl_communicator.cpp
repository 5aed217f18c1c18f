// The NCCL communicator (GPU tensors, one rank per GPU: cuda:<local_rank>), or, in a
// build without CUDA or NCCL, a factory that says so. Rank 0's unique id reaches the
// others over MPI (as llm.c does); a world of one needs no MPI. Collectives wait on
// their own stream under the same timeout rule as MPI's watchdog.
#include "distributed/engines.h"

#include "core/creation.h"
#include "core/error.h"

#if VGRAD_WITH_NCCL
#include <cuda_runtime.h>
#include <nccl.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <thread>

#include "cuda/libraries.h"  // NCCL is opened at the first communicator, not linked
#endif

namespace vgrad::distributed {

#if VGRAD_WITH_NCCL

bool built_with_nccl() { return true; }

namespace {

ncclDataType_t nccl_type(DType dtype) {
  switch (dtype) {
    case DType::Float32: return ncclFloat32;
    case DType::Float64: return ncclFloat64;
    case DType::Int64: return ncclInt64;
    case DType::BFloat16: return ncclBfloat16;
    case DType::Float16: return ncclFloat16;
  }
  fail("nccl: no NCCL datatype for dtype {}", dtype_name(dtype));
}

class NcclCommunicator final : public Communicator {
 public:
  NcclCommunicator(const Environment& environment, double timeout_seconds) : timeout_(timeout_seconds) {
    if (environment.world_size > 1) {
      bootstrap_ = detail::make_mpi_communicator(timeout_seconds);
      set_position(bootstrap_->rank(), bootstrap_->world_size(), bootstrap_->local_rank());
    }
    if (local_rank() >= cuda::device_count())
      fail("nccl: rank {} has local rank {}, but this machine has {} usable GPU(s): start one rank per GPU", rank(),
           local_rank(), cuda::device_count());
    device_ = Device(DeviceType::CUDA, local_rank());
    (void)cuda::backend(local_rank());  // initialises the device the vgrad way first
    check(cudaSetDevice(local_rank()), "cudaSetDevice");
    ncclUniqueId id{};
    if (rank() == 0) check(cuda::nccl().get_unique_id(&id), "ncclGetUniqueId");
    if (bootstrap_) {
      Tensor words = zeros({int64_t((sizeof(id) + 7) / 8)}, {.dtype = DType::Int64});
      std::memcpy(words.data<int64_t>(), &id, sizeof(id));
      bootstrap_->broadcast(words, 0);
      std::memcpy(&id, words.data<int64_t>(), sizeof(id));
    }
    check(cuda::nccl().comm_init_rank(&comm_, world_size(), id, rank()), "ncclCommInitRank");
    check(cudaStreamCreateWithFlags(&stream_, cudaStreamNonBlocking), "cudaStreamCreate");
  }

  ~NcclCommunicator() override {
    if (comm_ != nullptr) (void)cuda::nccl().comm_destroy(comm_);
    if (stream_ != nullptr) (void)cudaStreamDestroy(stream_);
  }

  std::string name() const override { return "nccl"; }
  Device device() const override { return device_; }

  [[noreturn]] void abort(const std::string& why) override {
    if (comm_ != nullptr) (void)cuda::nccl().comm_abort(comm_);
    comm_ = nullptr;
    if (bootstrap_) bootstrap_->abort(why);
    std::fprintf(stderr, "vgrad.distributed: %s: %s; exiting\n", where().c_str(), why.c_str());
    std::exit(1);
  }

 protected:
  void all_reduce_sum(const Tensor& tensor) override {
    run("all_reduce (sum)", tensor, [&] {
      return cuda::nccl().all_reduce(tensor.data_ptr(), tensor.data_ptr(), size_t(tensor.numel()),
                                     nccl_type(tensor.dtype()), ncclSum, comm_, stream_);
    });
  }
  void broadcast_from(const Tensor& tensor, int root) override {
    run("broadcast", tensor, [&] {
      return cuda::nccl().broadcast(tensor.data_ptr(), tensor.data_ptr(), size_t(tensor.numel()),
                                    nccl_type(tensor.dtype()), root, comm_, stream_);
    });
  }
  void all_gather_into(const Tensor& tensor, const Tensor& out) override {
    run("all_gather", tensor, [&] {
      return cuda::nccl().all_gather(tensor.data_ptr(), out.data_ptr(), size_t(tensor.numel()),
                                     nccl_type(tensor.dtype()), comm_, stream_);
    });
  }
  void barrier_impl() override { bootstrap_->barrier(); }
  bool accepts(Device device) const override { return device == device_; }

 private:
  void check(cudaError_t code, const char* call) const {
    if (code != cudaSuccess) fail("{}: {} failed: {}", where(), call, cudaGetErrorString(code));
  }
  void check(ncclResult_t code, const char* call) const {
    if (code != ncclSuccess) fail("{}: {} failed: {}", where(), call, cuda::nccl().get_error_string(code));
  }

  // Orders the call after the kernels that wrote the tensor, then waits for it with a deadline.
  template <class Call> void run(const char* collective, const Tensor& tensor, Call&& call) {
    const std::string what =
        fmt::format("{} of {} {} elements {}", collective, tensor.numel(), dtype_name(tensor.dtype()),
                    shape_str(tensor.shape()));
    backend_for(device_).synchronize();
    check(cudaSetDevice(device_.index), "cudaSetDevice");  // per host thread: DDP calls from its own
    check(call(), what.c_str());
    const auto start = std::chrono::steady_clock::now();
    while (true) {
      const cudaError_t state = cudaStreamQuery(stream_);
      if (state == cudaSuccess) return;
      if (state != cudaErrorNotReady) check(state, what.c_str());
      const double waited = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
      if (waited > timeout_)
        abort(fmt::format("{} has not completed after {:.0f} s: a peer rank died, hangs, or did not reach this "
                          "collective (VGRAD_DISTRIBUTED_TIMEOUT sets the limit)",
                          what, waited));
      std::this_thread::sleep_for(std::chrono::microseconds(50));
    }
  }

  std::shared_ptr<Communicator> bootstrap_;  // MPI, for the unique id and barriers; null for one rank
  Device device_;
  double timeout_;
  ncclComm_t comm_ = nullptr;
  cudaStream_t stream_ = nullptr;
};

}  // namespace

namespace detail {
std::shared_ptr<Communicator> make_nccl_communicator(const Environment& environment, double timeout_seconds) {
  return std::make_shared<NcclCommunicator>(environment, timeout_seconds);
}
}  // namespace detail

#else

bool built_with_nccl() { return false; }

namespace detail {
std::shared_ptr<Communicator> make_nccl_communicator(const Environment&, double) {
  fail("distributed: the NCCL backend needs a CUDA build with NCCL (reconfigure with -DVGRAD_CUDA=ON where nccl.h "
       "and libnccl are found); this build has {}",
       cuda::built_with_cuda() ? "CUDA but no NCCL" : "no CUDA");
}
}  // namespace detail

#endif

}  // namespace vgrad::distributed

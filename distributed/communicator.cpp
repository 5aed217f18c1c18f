// The checks every collective shares, the local communicator, the launcher's
// environment, the choice of engine, and rank-0-only work.
#include "distributed/communicator.h"

#include <spdlog/spdlog.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <thread>

#include "core/creation.h"
#include "core/error.h"
#include "core/grad_mode.h"
#include "distributed/engines.h"

namespace vgrad::distributed {

std::string Communicator::where() const { return fmt::format("rank {} of {} ({})", rank(), world_size(), name()); }

void Communicator::set_position(int rank, int world_size, int local_rank) {
  rank_ = rank;
  world_size_ = world_size;
  local_rank_ = local_rank;
}

void Communicator::check(const char* collective, const Tensor& tensor) const {
  if (!tensor.defined()) fail("{}: {}: the tensor is undefined", where(), collective);
  if (!tensor.is_contiguous() || tensor.offset() < 0)
    fail("{}: {}: tensor {} {} is not contiguous (collectives move one block of memory: pass .contiguous() and "
         "copy the result back)",
         where(), collective, shape_str(tensor.shape()), dtype_name(tensor.dtype()));
  if (!accepts(tensor.device()))
    fail("{}: {}: tensor {} {} is on {}, which the {} communicator cannot move{}", where(), collective,
         shape_str(tensor.shape()), dtype_name(tensor.dtype()), tensor.device().str(), name(),
         tensor.device().is_cpu() ? " (NCCL moves GPU tensors only)" : " (use the NCCL backend for GPU tensors)");
}

void Communicator::all_reduce(const Tensor& tensor, Reduction op) {
  check("all_reduce", tensor);
  if (op == Reduction::Average && !is_floating(tensor.dtype()))
    fail("{}: all_reduce: average of a {} tensor {} (integer averages would truncate; use Sum)", where(),
         dtype_name(tensor.dtype()), shape_str(tensor.shape()));
  if (tensor.numel() == 0 || world_size() == 1) return;
  all_reduce_sum(tensor);
  tensor.storage()->bump_version();
  if (op == Reduction::Average) {
    NoGradGuard no_grad;  // a parameter's data may be averaged in place
    Tensor(tensor).mul_(1.0 / world_size());
  }
}

void Communicator::broadcast(const Tensor& tensor, int root) {
  check("broadcast", tensor);
  if (root < 0 || root >= world_size())
    fail("{}: broadcast: root {} out of range for {} ranks", where(), root, world_size());
  if (tensor.numel() == 0 || world_size() == 1) return;
  broadcast_from(tensor, root);
  tensor.storage()->bump_version();
}

Tensor Communicator::all_gather(const Tensor& tensor) {
  check("all_gather", tensor);
  Shape shape = tensor.shape();
  shape.insert(shape.begin(), world_size());
  Tensor out = Tensor::empty(shape, tensor.dtype(), tensor.device());
  if (out.numel() > 0) all_gather_into(tensor, out);
  return out;
}

void Communicator::barrier() {
  if (world_size() > 1) barrier_impl();
}

void LocalCommunicator::all_gather_into(const Tensor& tensor, const Tensor& out) {
  NoGradGuard no_grad;
  Tensor(out).copy_(tensor.detach().unsqueeze(0));
}

void LocalCommunicator::abort(const std::string& why) {
  std::fprintf(stderr, "vgrad.distributed: %s: %s; exiting\n", where().c_str(), why.c_str());
  std::fflush(stderr);
  std::exit(1);
}

namespace {

// The variable's value as a non-negative int, or `fallback` when it is not set.
int env_int(const char* name, int fallback) {
  const char* text = std::getenv(name);
  if (text == nullptr || *text == '\0') return fallback;
  char* end = nullptr;
  errno = 0;
  const long value = std::strtol(text, &end, 10);
  if (errno != 0 || *end != '\0' || value < 0 || value > (1 << 24))
    fail("distributed: environment variable {}=\"{}\" is not a rank or size", name, text);
  return int(value);
}

}  // namespace

Environment read_environment() {
  struct Launcher {
    const char *name, *rank, *size, *local_rank, *local_size;
  };
  // (Slurm's ranks per node come as "2(x3),1": not read, local_size stays 0.)
  static constexpr Launcher launchers[] = {
      {"openmpi", "OMPI_COMM_WORLD_RANK", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_LOCAL_RANK",
       "OMPI_COMM_WORLD_LOCAL_SIZE"},
      {"pmi", "PMI_RANK", "PMI_SIZE", "MPI_LOCALRANKID", "MPI_LOCALNRANKS"},
      {"slurm", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID", nullptr},
  };
  for (const Launcher& launcher : launchers) {
    const int size = env_int(launcher.size, -1);
    if (size < 0) continue;
    Environment environment{.rank = env_int(launcher.rank, 0),
                            .world_size = size,
                            .local_rank = env_int(launcher.local_rank, 0),
                            .local_size = launcher.local_size ? env_int(launcher.local_size, 0) : 0,
                            .launcher = launcher.name};
    if (size < 1 || environment.rank >= size || environment.local_rank >= size)
      fail("distributed: {} says rank {} (local {}) of {} ranks ({}, {}, {}): out of range", launcher.name,
           environment.rank, environment.local_rank, size, launcher.rank, launcher.local_rank, launcher.size);
    return environment;
  }
  return {};
}

namespace detail {

double resolve_timeout(double requested) {
  if (requested < 0) fail("distributed: timeout_seconds must be >= 0 (0: default), got {}", requested);
  if (requested > 0) return requested;
  const char* text = std::getenv("VGRAD_DISTRIBUTED_TIMEOUT");
  if (text == nullptr || *text == '\0') return 300;
  char* end = nullptr;
  const double value = std::strtod(text, &end);
  if (*end != '\0' || !(value > 0))
    fail("distributed: VGRAD_DISTRIBUTED_TIMEOUT=\"{}\" is not a positive number of seconds", text);
  return value;
}

}  // namespace detail

std::vector<std::string> share_cores(const Environment& environment, unsigned cores) {
  std::vector<std::string> settings;
  if (environment.local_size < 2 || cores == 0) return settings;
  auto set_default = [&](const char* name, const std::string& value) {
    if (std::getenv(name) != nullptr) return;  // the user's choice stands
    setenv(name, value.c_str(), 0);
    settings.push_back(fmt::format("{}={}", name, value));
  };
  const unsigned ranks = unsigned(environment.local_size);
  set_default("OPENBLAS_NUM_THREADS", std::to_string(std::max(1u, cores / ranks)));
  if (ranks >= cores) set_default("OMPI_MCA_mpi_yield_when_idle", "1");
  return settings;
}

std::shared_ptr<Communicator> init_from_environment(CommunicatorOptions options) {
  const Environment environment = read_environment();
  const double timeout = detail::resolve_timeout(options.timeout_seconds);
  // Before MPI_Init and the first GEMM: both libraries read these when they start.
  const std::vector<std::string> settings = share_cores(environment, std::thread::hardware_concurrency());
  if (!settings.empty() && environment.local_rank == 0)
    spdlog::info("distributed: {} ranks share {} cores here: {} (set them yourself to choose)", environment.local_size,
                 std::thread::hardware_concurrency(), fmt::join(settings, ", "));
  switch (options.engine) {
    case Engine::Auto:
      if (environment.world_size == 1) return std::make_shared<LocalCommunicator>();
      return detail::make_mpi_communicator(timeout);
    case Engine::Local:
      if (environment.world_size > 1)
        fail("distributed: the local communicator has one rank, but {} started {} ranks", environment.launcher,
             environment.world_size);
      return std::make_shared<LocalCommunicator>();
    case Engine::Mpi: return detail::make_mpi_communicator(timeout);
    case Engine::Nccl: return detail::make_nccl_communicator(environment, timeout);
  }
  fail("distributed: unknown backend {}", int(options.engine));
}

void run_on_rank_zero(Communicator& communicator, const std::string& what, const std::function<void()>& work) {
  // Rank 0's outcome travels as a length-prefixed message: 0 bytes means success.
  std::exception_ptr failure;
  std::string error;
  if (communicator.is_main()) {
    try {
      work();
    } catch (const std::exception& e) {
      failure = std::current_exception();
      error = *e.what() ? e.what() : "unknown error";
    }
  }
  if (communicator.world_size() > 1) {
    const TensorOptions on_device{.dtype = DType::Int64, .device = communicator.device()};
    Tensor length = full({}, double(error.size()), on_device);
    communicator.broadcast(length, 0);  // the others wait here until rank 0's work is done
    const auto bytes = length.item<int64_t>();
    if (bytes > 0) {
      // The message as int64 words, so any communicator that moves int64 can carry it.
      Tensor words = zeros({(bytes + 7) / 8}, {.dtype = DType::Int64});
      if (communicator.is_main()) std::memcpy(words.data<int64_t>(), error.data(), error.size());
      words = words.to(communicator.device());
      communicator.broadcast(words, 0);
      const std::vector<int64_t> host = words.to_vector<int64_t>();
      if (!communicator.is_main())
        fail("rank {}: rank 0 failed to {}: {}", communicator.rank(), what,
             std::string(reinterpret_cast<const char*>(host.data()), size_t(bytes)));
    }
  }
  if (failure) std::rethrow_exception(failure);
}

void quiet_other_ranks(const Communicator& communicator) {
  if (!communicator.is_main()) spdlog::set_level(spdlog::level::warn);
}

}  // namespace vgrad::distributed

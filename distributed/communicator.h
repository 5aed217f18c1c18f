// Communicator: collectives across the ranks of a distributed run (all-reduce,
// broadcast, all-gather, barrier) on whole tensors, in place where the result has the
// input's shape. Three engines behind one interface: local (world size 1, no
// dependency), MPI (host tensors) and NCCL (GPU tensors); it moves bytes, not autograd.
//
//   auto comm = distributed::init_from_environment();   // what mpirun set, or local
//   comm->all_reduce(grad, distributed::Reduction::Average);
#pragma once
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "core/tensor.h"

namespace vgrad::distributed {

enum class Reduction { Sum, Average };

// Where this process stands in the job, as its launcher (mpirun, srun) told it.
struct Environment {
  int rank = 0;
  int world_size = 1;
  int local_rank = 0;    // index among the ranks on this machine: the GPU a rank uses
  int local_size = 0;    // ranks on this machine; 0 when the launcher does not say
  std::string launcher{};  // "openmpi", "pmi", "slurm", or "" when no launcher set anything
};
// Reads OMPI_COMM_WORLD_{RANK,SIZE,LOCAL_RANK,LOCAL_SIZE} (Open MPI), PMI_RANK/PMI_SIZE/
// MPI_LOCALRANKID/MPI_LOCALNRANKS (MPICH, Intel MPI) or SLURM_{PROCID,NTASKS,LOCALID}; a
// malformed value is an error naming it.
Environment read_environment();

// What init_from_environment() sets before MPI and OpenBLAS start, when several ranks share
// this machine's cores and the user has not set it: OPENBLAS_NUM_THREADS = cores / ranks here
// (at least 1; each rank's OpenBLAS would otherwise start a thread per core), and, when the
// ranks fill the cores, OMPI_MCA_mpi_yield_when_idle=1 (a rank waiting in a collective yields
// its core instead of spinning on it: the spin took the core its compute thread needed and
// made 2 ranks on 2 cores wait 5-40x longer; docs/distributed.md). Returns the settings it
// made, as "NAME=value" (nothing for a single rank or an unknown local size).
std::vector<std::string> share_cores(const Environment& environment, unsigned cores);

enum class Engine {
  Auto,  // MPI when launched with more than one rank, local otherwise
  Local,
  Mpi,
  Nccl,  // GPU tensors; one rank per GPU (cuda:<local_rank>); MPI passes the unique id
};

struct CommunicatorOptions {
  Engine engine = Engine::Auto;
  // A collective that has not completed after this long aborts the whole job, naming
  // the rank and the collective: a dead or stuck peer never hangs a run forever.
  // 0 takes VGRAD_DISTRIBUTED_TIMEOUT (seconds) from the environment, else 300.
  double timeout_seconds = 0;
};

class Communicator {
 public:
  virtual ~Communicator() = default;
  int rank() const { return rank_; }
  int world_size() const { return world_size_; }
  int local_rank() const { return local_rank_; }  // index among the ranks on this machine
  virtual std::string name() const = 0;           // "local", "mpi", "nccl"
  // Where its own messages live (the NCCL communicator's GPU, otherwise the CPU).
  virtual Device device() const = 0;
  bool is_main() const { return rank() == 0; }

  // In place on a contiguous tensor on this communicator's device kind; every rank
  // passes the same shape and dtype. Average divides the sum by world_size (floating only).
  void all_reduce(const Tensor& tensor, Reduction op = Reduction::Sum);
  // Rank `root`'s values into every rank's tensor.
  void broadcast(const Tensor& tensor, int root = 0);
  // (world_size, *shape): rank r's tensor in row r.
  Tensor all_gather(const Tensor& tensor);
  void barrier();
  // Prints "rank r of n: <why>" to stderr and ends every rank of the job (MPI_Abort);
  // what a rank calls when it cannot go on, so its peers do not wait in a collective.
  [[noreturn]] virtual void abort(const std::string& why) = 0;

 protected:
  // The checks are done once, above; these move the bytes. tensor is contiguous, numel > 0.
  virtual void all_reduce_sum(const Tensor& tensor) = 0;
  virtual void broadcast_from(const Tensor& tensor, int root) = 0;
  virtual void all_gather_into(const Tensor& tensor, const Tensor& out) = 0;
  virtual void barrier_impl() = 0;
  // Whether a tensor on `device` can travel through this communicator.
  virtual bool accepts(Device device) const = 0;
  // "rank 1 of 2 (mpi)": the start of every error message.
  std::string where() const;
  // Where this process stands, set by an engine's constructor once it knows (until then,
  // and for the local engine: rank 0 of 1).
  void set_position(int rank, int world_size, int local_rank);

 private:
  void check(const char* collective, const Tensor& tensor) const;
  int rank_ = 0, world_size_ = 1, local_rank_ = 0;
};

// Size 1, no dependency: every collective is the identity (all_gather adds the leading 1).
class LocalCommunicator final : public Communicator {
 public:
  std::string name() const override { return "local"; }
  Device device() const override { return kCPU; }
  [[noreturn]] void abort(const std::string& why) override;

 protected:
  void all_reduce_sum(const Tensor&) override {}
  void broadcast_from(const Tensor&, int) override {}
  void all_gather_into(const Tensor& tensor, const Tensor& out) override;
  void barrier_impl() override {}
  bool accepts(Device) const override { return true; }
};

// The communicator the launcher asked for (see Engine); throws, naming what is missing,
// when this build lacks MPI or NCCL but the job needs it.
std::shared_ptr<Communicator> init_from_environment(CommunicatorOptions options = {});
bool built_with_mpi();
bool built_with_nccl();

// Runs `work` on rank 0 only (writing a checkpoint, a metrics file), then every rank
// waits at a barrier. If rank 0's work throws, every rank throws: rank 0 its own
// error, the others "rank 0 failed to <what>: ..." (the message is broadcast).
void run_on_rank_zero(Communicator& communicator, const std::string& what, const std::function<void()>& work);

// Ranks other than 0 log only warnings and errors (spdlog's default logger), so a run
// prints one progress line per epoch, not one per rank.
void quiet_other_ranks(const Communicator& communicator);

}  // namespace vgrad::distributed

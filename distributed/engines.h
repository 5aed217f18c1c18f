// The MPI and NCCL communicators' factories, for init_from_environment. Each engine
// lives in its own file that compiles to a throwing stub when the build lacks it, so
// no header of vgrad includes mpi.h or nccl.h.
#pragma once
#include <memory>

#include "distributed/communicator.h"

namespace vgrad::distributed::detail {

std::shared_ptr<Communicator> make_mpi_communicator(double timeout_seconds);
std::shared_ptr<Communicator> make_nccl_communicator(const Environment& environment, double timeout_seconds);

// "VGRAD_DISTRIBUTED_TIMEOUT" or 300 s when `requested` is 0; a bad value is an error.
double resolve_timeout(double requested);

}  // namespace vgrad::distributed::detail

#pragma once

/// \file
/// rlobj's scale-out on `torch.distributed` (LibTorch's c10d, the Gloo backend): a process
/// group set up from torchrun's variables (`ProcessGroup`), data-parallel learners
/// (`DataParallel`) and distributed collection (`DistributedCollector`). Link the CMake target
/// `rlobj::distributed`; `rlobj/rlobj.h` does not include this header.

#include "rlobj/distributed/collector.h"
#include "rlobj/distributed/data_parallel.h"
#include "rlobj/distributed/process_group.h"

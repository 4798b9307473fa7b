#pragma once

/// \file
/// rlobj: TorchRL's objectives for LibTorch. This umbrella header only includes the others;
/// each concept lives in one header you can reach from here in one hop.

#include "rlobj/version.h"

// Data
#include "rlobj/tensordict.h"

#pragma once

/// \file
/// Everything a loss is built on, in one include: the loss base and its contract
/// (`loss_module.h`), the flat parameter groups (`parameter_group.h`), the input checks
/// (`checks.h`) and the functional pieces (`functional.h`: distances, reductions, option enums).

#include "rlobj/objectives/checks.h"
#include "rlobj/objectives/functional.h"
#include "rlobj/objectives/loss_module.h"
#include "rlobj/objectives/parameter_group.h"

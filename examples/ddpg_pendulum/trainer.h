#pragma once

// ddpg_pendulum's training loop: the shared off-policy trainer with DDPG (examples/offpolicy/).

#include "offpolicy/trainer.h"

namespace ddpg_pendulum {
using Config = offpolicy::Config;
using Trainer = offpolicy::Trainer<offpolicy::DDPG>;
}  // namespace ddpg_pendulum

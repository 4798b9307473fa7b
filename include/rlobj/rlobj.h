#pragma once

/// \file
/// rlobj: TorchRL's objectives for LibTorch. This umbrella header only includes the others;
/// each concept lives in one header you can reach from here in one hop.

// The whole LibTorch C++ API (torch::optim, torch::nn...), as a training program needs it.
#include <torch/torch.h>

#include "rlobj/version.h"

// Data containers and specs
#include "rlobj/tensordict.h"
#include "rlobj/specs.h"

// Modules (rlobj::modules)
#include "rlobj/modules/mlp.h"
#include "rlobj/modules/tensordict_module.h"
#include "rlobj/modules/actor.h"
#include "rlobj/modules/value_operator.h"
#include "rlobj/modules/exploration_type.h"
#include "rlobj/modules/exploration.h"
#include "rlobj/modules/distributions.h"
#include "rlobj/modules/probabilistic.h"
#include "rlobj/modules/qvalue.h"

// Environments (rlobj::envs)
#include "rlobj/envs/common.h"
#include "rlobj/envs/pendulum.h"
#include "rlobj/envs/cartpole.h"
#include "rlobj/envs/transforms.h"

// Data collection and storage (rlobj::collectors, rlobj::data), checkpoints
#include "rlobj/collectors/common.h"
#include "rlobj/collectors/sync.h"
#include "rlobj/data/replay_buffer.h"
#include "rlobj/data/samplers.h"
#include "rlobj/serialize.h"
#include "rlobj/interop.h"
#include "rlobj/deploy/program.h"
#include "rlobj/deploy/c.h"

// Objectives (rlobj::objectives) and value estimators (rlobj::objectives::value)
#include "rlobj/objectives/common.h"
#include "rlobj/objectives/value/functional.h"
#include "rlobj/objectives/value/advantages.h"
#include "rlobj/objectives/ddpg.h"
#include "rlobj/objectives/td3.h"
#include "rlobj/objectives/sac.h"
#include "rlobj/objectives/dqn.h"
#include "rlobj/objectives/actor_critic.h"
#include "rlobj/objectives/ppo.h"
#include "rlobj/objectives/a2c.h"
#include "rlobj/objectives/reinforce.h"
#include "rlobj/objectives/utils.h"
#include "rlobj/engine/blas.h"
#include "rlobj/engine/kernels.h"
#include "rlobj/engine/mlp.h"
#include "rlobj/engine/actor_critic.h"
#include "rlobj/trainers/checkpoint.h"
#include "rlobj/trainers/trainer.h"
#include "rlobj/trainers/update.h"
#include "rlobj/trainers/hooks.h"

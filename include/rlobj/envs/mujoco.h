#pragma once

/// \file
/// gymnasium's MuJoCo locomotion tasks on MuJoCo's C API: `rlobj::envs::mujoco::HalfCheetah`,
/// `Hopper`, `Walker2d`, `Ant` (v5), batched. Not part of `<rlobj/rlobj.h>`: it needs MuJoCo,
/// which the `rlobj::mujoco` CMake target brings (docs/mujoco.md).

#include "rlobj/envs/mujoco/locomotion.h"
#include "rlobj/envs/mujoco/mujoco_env.h"

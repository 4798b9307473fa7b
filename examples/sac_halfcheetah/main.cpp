// sac_halfcheetah: trains SAC on gymnasium's HalfCheetah-v5 (MuJoCo, rlobj/envs/mujoco.h) with
// rlobj, evaluates it, logs it. Built where rlobj::mujoco is (scripts/mujoco_env.sh).
//
//   sac_halfcheetah --seed 0 --log-csv returns.csv         # TorchRL's / CleanRL's settings, 100k frames
//   sac_halfcheetah --env hopper --total-frames 300000      # another MuJoCo task
//   sac_halfcheetah --help
//
// The run and the command line are the off-policy examples' (examples/common/offpolicy.h) with
// the MuJoCo defaults of offpolicy::SACMujoco.

#include "common/offpolicy_main.h"

int main(int argc, char** argv) { return offpolicy::main<offpolicy::SACMujoco>(argc, argv); }

// ppo_pendulum: PPO (ClipPPOLoss, a TanhNormal policy) on gym's Pendulum-v1 with rlobj, TorchRL's
// PPO MuJoCo example adapted to Pendulum. The run is examples/common/ppo.h's; this file is the
// task.
//
//   ppo_pendulum --seed 0 --log-csv returns.csv
//   ppo_pendulum --help

#include "ppo_pendulum/task.h"

int main(int argc, char** argv) { return ppo::main<ppo_pendulum::Task>(argc, argv); }

// ppo_pendulum: trains PPO (ClipPPOLoss, a TanhNormal policy) on gym's Pendulum-v1 with rlobj,
// TorchRL's PPO MuJoCo example adapted to Pendulum; evaluates it, logs it.
//
//   ppo_pendulum --seed 0 --log-csv returns.csv
//   ppo_pendulum --help
//
// The training loop and the command line are shared with ppo_cartpole (examples/onpolicy/).

#include "onpolicy/main.h"

int main(int argc, char** argv) { return onpolicy::main<onpolicy::PendulumPPO>(argc, argv); }

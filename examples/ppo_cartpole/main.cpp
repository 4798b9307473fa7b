// ppo_cartpole: trains PPO (ClipPPOLoss, a OneHotCategorical policy) on gymnasium's CartPole-v1
// with rlobj, evaluates it, logs it. Its default flags solve CartPole-v1 (a deterministic
// evaluation return of 500, the maximum) on seeds 0, 1 and 2.
//
//   ppo_cartpole --seed 0 --log-csv returns.csv
//   ppo_cartpole --help
//
// The training loop and the command line are shared with ppo_pendulum (examples/onpolicy/).

#include "onpolicy/main.h"

int main(int argc, char** argv) { return onpolicy::main<onpolicy::CartPolePPO>(argc, argv); }

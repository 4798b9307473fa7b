// ddpg_pendulum: trains DDPG on gym's Pendulum-v1 with rlobj, evaluates it, logs it.
//
//   ddpg_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   ddpg_pendulum --help
//
// The run (networks, loss, update, replay buffer on rlobj's trainer) and the command line are the
// off-policy examples' (examples/common/offpolicy.h); this program picks DDPG.

#include "common/offpolicy_main.h"

int main(int argc, char** argv) { return offpolicy::main<offpolicy::DDPG>(argc, argv); }

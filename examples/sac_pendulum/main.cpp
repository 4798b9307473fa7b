// sac_pendulum: trains SAC on gym's Pendulum-v1 with rlobj, evaluates it, logs it.
//
//   sac_pendulum --seed 0 --total-frames 20000 --log-csv returns.csv
//   sac_pendulum --help
//
// The training loop and the command line are shared with the other off-policy examples
// (examples/offpolicy/).

#include "offpolicy/main.h"

int main(int argc, char** argv) { return offpolicy::main<offpolicy::SAC>(argc, argv); }

// Includes every public header. Linked together with all_headers_b_test.cpp into one
// binary, so a non-inline function defined in a header fails the link (one-definition rule).
#include <rlobj/rlobj.h>
#include <rlobj/collectors/sync.h>
#include <rlobj/data/replay_buffer.h>
#include <rlobj/data/samplers.h>
#include <rlobj/detail/format.h>
#include <rlobj/detail/keys.h>
#include <rlobj/envs/common.h>
#include <rlobj/envs/pendulum.h>
#include <rlobj/modules/actor.h>
#include <rlobj/modules/distributions.h>
#include <rlobj/modules/exploration.h>
#include <rlobj/modules/exploration_type.h>
#include <rlobj/modules/probabilistic.h>
#include <rlobj/modules/mlp.h>
#include <rlobj/modules/tensordict_module.h>
#include <rlobj/modules/value_operator.h>
#include <rlobj/objectives/common.h>
#include <rlobj/objectives/ddpg.h>
#include <rlobj/objectives/sac.h>
#include <rlobj/objectives/utils.h>
#include <rlobj/objectives/value/advantages.h>
#include <rlobj/objectives/value/functional.h>
#include <rlobj/serialize.h>
#include <rlobj/specs.h>
#include <rlobj/tensordict.h>
#include <rlobj/version.h>

#include <catch2/catch.hpp>

TEST_CASE("all headers compile together (a)", "[headers]") {
  CHECK(std::string(RLOBJ_VERSION_STRING) == "0.2.0");
  rlobj::TensorDict td({2});
  CHECK(td.batch_dims() == 1);
}

// A second translation unit including rlobj: a non-inline definition in a header would make
// the link fail with a multiple-definition error.
#include <rlobj/rlobj.h>

int second_translation_unit() { return static_cast<int>(rlobj::TensorDict({2}).batch_size()[0]); }

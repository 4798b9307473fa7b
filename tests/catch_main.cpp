// The Catch2 test runner. Kept out of the precompiled header (see tests/CMakeLists.txt).
#define CATCH_CONFIG_MAIN
#include <catch2/catch.hpp>

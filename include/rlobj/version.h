#pragma once

/// \file
/// rlobj's version, kept in step with `project(rlobj VERSION ...)` in CMakeLists.txt.

#define RLOBJ_VERSION_MAJOR 0
#define RLOBJ_VERSION_MINOR 1
#define RLOBJ_VERSION_PATCH 0
#define RLOBJ_VERSION_STRING "0.1.0"

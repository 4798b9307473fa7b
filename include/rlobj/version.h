#pragma once

/// \file
/// rlobj's version, kept in step with `project(rlobj VERSION ...)` in CMakeLists.txt.

/// Major version.
#define RLOBJ_VERSION_MAJOR 0
/// Minor version.
#define RLOBJ_VERSION_MINOR 2
/// Patch version.
#define RLOBJ_VERSION_PATCH 0
/// The version as a string, `MAJOR.MINOR.PATCH`.
#define RLOBJ_VERSION_STRING "0.2.0"

# What rlobj must know about the LibTorch it was given, decided once Torch is found (included
# by CMakeLists.txt and by the installed rlobjConfig.cmake).
#
# fmt. Official LibTorch 2.x builds (the pip wheel, the libtorch download) ship fmt's headers
# in their own include dir (torch 2.15: fmt 12.2), which every target linking Torch then sees
# before the system's. Compiling against those headers while linking another fmt library
# (Debian's libfmt 9) mixes two versions of fmt: undefined or, worse, mismatched symbols. So
# when Torch brings fmt headers, rlobj uses exactly those, header-only (FMT_HEADER_ONLY); else
# it links the fmt package (Debian's libfmt-dev beside Debian's LibTorch).
#   -> RLOBJ_FMT_FROM_TORCH: the include dir holding Torch's fmt, or empty.
#
# The pip wheel's CUDA libraries. libtorch_cuda.so finds its NCCL, cuBLAS... in the wheel's
# nvidia/*/lib through its own RPATH ($ORIGIN/../../nvidia/...). But TorchConfig puts the CUDA
# toolkit's lib dir (/usr/local/cuda/lib) on the executable's rpath, and GNU ld searches that
# first when it resolves libtorch_cuda.so's dependencies at link time: with a toolkit whose
# NCCL is older than the wheel's (CUDA 13.0's against torch 2.15's 2.30), linking fails on
# undefined nccl* symbols. Pointing -rpath-link at the wheel's own dirs fixes the link; at run
# time the library's RPATH already wins.
#   -> RLOBJ_TORCH_LINK_OPTIONS: link options for every target linking rlobj, or empty.
set(RLOBJ_FMT_FROM_TORCH "")
foreach(_rlobj_dir IN LISTS TORCH_INCLUDE_DIRS)
  get_filename_component(_rlobj_dir "${_rlobj_dir}" REALPATH)
  if(EXISTS "${_rlobj_dir}/fmt/format.h" AND NOT _rlobj_dir MATCHES "^/usr(/local)?/include$")
    set(RLOBJ_FMT_FROM_TORCH "${_rlobj_dir}")
    break()
  endif()
endforeach()

set(RLOBJ_TORCH_LINK_OPTIONS "")
file(GLOB _rlobj_wheel_libs LIST_DIRECTORIES true "${TORCH_INSTALL_PREFIX}/../nvidia/*/lib")
if(_rlobj_wheel_libs AND NOT WIN32 AND NOT APPLE)
  list(JOIN _rlobj_wheel_libs ":" _rlobj_wheel_libs)
  set(RLOBJ_TORCH_LINK_OPTIONS "LINKER:-rpath-link,${_rlobj_wheel_libs}")
endif()
unset(_rlobj_dir)
unset(_rlobj_wheel_libs)

# A LibTorch beside another one. TorchConfig looks for libtorch.so with find_library(... PATHS
# <its prefix>/lib), and CMake searches the system's library dirs before those PATHS: with
# Debian's libtorch-dev installed, a build against the pip wheel or a libtorch download would
# link /usr/lib/.../libtorch.so (1.13) under 2.x headers. When the LibTorch that was found has
# its own libtorch.so, that one is used, and the mix-up is reported.
if(TARGET torch AND TORCH_LIBRARY AND EXISTS "${TORCH_INSTALL_PREFIX}/lib/libtorch.so")
  get_filename_component(_rlobj_found "${TORCH_LIBRARY}" REALPATH)
  get_filename_component(_rlobj_own "${TORCH_INSTALL_PREFIX}/lib/libtorch.so" REALPATH)
  if(NOT _rlobj_found STREQUAL _rlobj_own)
    message(STATUS "rlobj: TorchConfig found ${TORCH_LIBRARY}, which belongs to another LibTorch "
                   "than ${TORCH_INSTALL_PREFIX}; using ${_rlobj_own}")
    set(TORCH_LIBRARY "${_rlobj_own}" CACHE FILEPATH "libtorch.so of the LibTorch in use" FORCE)
    set_target_properties(torch PROPERTIES IMPORTED_LOCATION "${_rlobj_own}")
  endif()
  unset(_rlobj_found)
  unset(_rlobj_own)
endif()

# How rlobj gets fmt, decided once Torch is found (included by CMakeLists.txt and by the
# installed rlobjConfig.cmake).
#
# Official LibTorch 2.x builds (the pip wheel, the libtorch download) ship fmt's headers in
# their own include dir (torch 2.15: fmt 12.2), which every target linking Torch then sees
# before the system's. Compiling against those headers while linking another fmt library
# (Debian's libfmt 9) mixes two versions of fmt: undefined or, worse, mismatched symbols. So
# when Torch brings fmt headers, rlobj uses exactly those, header-only (FMT_HEADER_ONLY); else
# it links the fmt package (Debian's libfmt-dev beside Debian's LibTorch).
#
# Sets RLOBJ_FMT_FROM_TORCH (the include dir holding Torch's fmt, or empty).
set(RLOBJ_FMT_FROM_TORCH "")
foreach(_rlobj_dir IN LISTS TORCH_INCLUDE_DIRS)
  get_filename_component(_rlobj_dir "${_rlobj_dir}" REALPATH)
  if(EXISTS "${_rlobj_dir}/fmt/format.h" AND NOT _rlobj_dir MATCHES "^/usr(/local)?/include$")
    set(RLOBJ_FMT_FROM_TORCH "${_rlobj_dir}")
    break()
  endif()
endforeach()
unset(_rlobj_dir)

cmake_minimum_required(VERSION 3.16)
# ctest entry docs.point_mass: the code block that follows HEADING in PAGE is FILE, byte for byte,
# so that the documentation shows the code the tests compile and train.
#   cmake -DPAGE=<docs/environments.md> -DHEADING=<"### ..."> -DFILE=<source> -P check_snippet.cmake
file(READ "${PAGE}" page)
file(READ "${FILE}" source)
string(FIND "${page}" "${HEADING}" at)
if(at EQUAL -1)
  message(FATAL_ERROR "docs: ${PAGE} has no heading \"${HEADING}\"")
endif()
string(SUBSTRING "${page}" ${at} -1 rest)
string(FIND "${rest}" "```cpp\n" open)
if(open EQUAL -1)
  message(FATAL_ERROR "docs: no ```cpp block after \"${HEADING}\" in ${PAGE}")
endif()
math(EXPR open "${open} + 7")
string(SUBSTRING "${rest}" ${open} -1 rest)
string(FIND "${rest}" "```\n" close)
string(SUBSTRING "${rest}" 0 ${close} block)
if(NOT block STREQUAL source)
  message(FATAL_ERROR "docs: the code block after \"${HEADING}\" in ${PAGE} differs from ${FILE}; copy the file "
                      "into the page")
endif()
message("docs: ${PAGE} shows ${FILE} as it is")

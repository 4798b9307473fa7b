# Checks that two --log-csv files end with the same row, the wall time (4th column) aside: a run
# resumed from a checkpoint must reach exactly the state of the run that never stopped.
#   cmake -DA=<file> -DB=<file> -P same_last_row.cmake
foreach(f A B)
  file(STRINGS "${${f}}" lines)
  list(GET lines -1 last)
  string(REPLACE "," ";" cells "${last}")
  list(REMOVE_AT cells 3)
  set(row_${f} "${cells}")
endforeach()
if(NOT row_A STREQUAL row_B)
  message(FATAL_ERROR "last rows differ (wall time aside):\n  ${A}: ${row_A}\n  ${B}: ${row_B}")
endif()
message(STATUS "same last row (wall time aside): ${row_A}")

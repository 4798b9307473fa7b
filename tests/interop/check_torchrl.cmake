# ctest entry interop.torchrl: TorchRL 0.14.1, in Python, loads what rlobj saves and acts as rlobj,
# and loads the replay buffer rlobj dumps (then dumps it back for rlobj to read).
#   cmake -DTESTS=<rlobj_tests> -DPYTHON=<python with torchrl 0.14.1, or empty> -DDIR=<scratch dir>
#         -DSCRIPT=<tests/interop/check_torchrl.py> -P check_torchrl.cmake
# 1. rlobj_tests "[.interop-torchrl-write]" saves each example policy (save_state_dict), some
#    observations and rlobj's actions; 2. check_torchrl.py builds TorchRL's policies, loads those
#    files strictly and acts; 3. rlobj_tests "[.interop-torchrl-read]" compares the actions
#    within the derived tolerance; the same three steps round-trip a replay buffer
#    (tests/data/torchrl_files_test.cpp). PYTHON defaults to tools/reference's virtual environment
#    ($RLOBJ_REFERENCE_VENV, else ~/.cache/rlobj/reference-venv); skipped, saying why, when it
#    cannot import torchrl 0.14.1 (about 5 GB; tools/reference/generate.sh creates it).
if(NOT PYTHON)
  if(DEFINED ENV{RLOBJ_REFERENCE_VENV})
    set(PYTHON "$ENV{RLOBJ_REFERENCE_VENV}/bin/python")
  else()
    set(PYTHON "$ENV{HOME}/.cache/rlobj/reference-venv/bin/python")
  endif()
endif()
execute_process(COMMAND ${PYTHON} -c "import torchrl, torch; print(torchrl.__version__, torch.__version__)"
                RESULT_VARIABLE rc OUTPUT_VARIABLE versions ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0 OR NOT versions MATCHES "^0\\.14\\.1 ")
  message("interop.torchrl: SKIPPED: \"${PYTHON}\" cannot import torchrl 0.14.1 (got: \"${versions}\"); "
          "tools/reference/generate.sh creates that environment (about 5 GB), or configure with "
          "-DRLOBJ_TORCHRL_PYTHON=/path/to/python")
  return()
endif()
message("interop.torchrl: torchrl and torch ${versions} (${PYTHON})")
file(REMOVE_RECURSE ${DIR})
file(MAKE_DIRECTORY ${DIR})
execute_process(COMMAND ${CMAKE_COMMAND} -E env RLOBJ_TORCHRL_DIR=${DIR} ${TESTS} "[.interop-torchrl-write]"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "interop.torchrl: writing rlobj's files failed (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env OMP_NUM_THREADS=1 ${PYTHON} ${SCRIPT} ${DIR} RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "interop.torchrl: TorchRL did not load rlobj's policies (${rc})")
endif()
execute_process(COMMAND ${CMAKE_COMMAND} -E env RLOBJ_TORCHRL_DIR=${DIR} ${TESTS} "[.interop-torchrl-read]"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "interop.torchrl: TorchRL's actions differ from rlobj's (${rc})")
endif()
file(REMOVE_RECURSE ${DIR})
message("interop.torchrl: passed (every example policy loaded strictly in TorchRL 0.14.1 and acted within the derived "
        "tolerance; rlobj's replay buffer loaded by TorchRL and back, unchanged)")

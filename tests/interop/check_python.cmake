# ctest entry interop.python: the Python side of rlobj's interop files.
#   cmake -DTESTS=<rlobj_tests> -DPYTHON=<python> -DDIR=<scratch dir> -DREFERENCE=<tests/data/reference/interop>
#         -DSCRIPTS=<tests/interop> -P check_python.cmake
# Runs the C++ test "interop: files for the Python checks" (which writes a state dict with
# TorchRL's Actor names, one with its MLP's, a TorchScript policy and the actions it must give),
# then, with PYTHON's torch: tests/interop/check_export.py on both state dicts
# (torch.load -> dict -> load_state_dict into the actor -> TorchRL's expected actions) and
# check_torchscript.py on the policy (torch.jit.load -> the C++ actions). Skipped, saying why,
# when PYTHON cannot import torch.
execute_process(COMMAND ${PYTHON} -c "import torch; print(torch.__version__)"
                RESULT_VARIABLE rc OUTPUT_VARIABLE version ERROR_VARIABLE err OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message("interop.python: SKIPPED: \"${PYTHON}\" cannot import torch (on Debian: apt-get install python3-torch, "
          "or configure with -DRLOBJ_PYTHON=/path/to/python-with-torch; scripts/test.sh does both)")
  return()
endif()
message("interop.python: Python torch ${version} (${PYTHON})")
file(REMOVE_RECURSE ${DIR})
execute_process(COMMAND ${CMAKE_COMMAND} -E env RLOBJ_INTEROP_DIR=${DIR} ${TESTS} "interop: files for the Python checks"
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  message(FATAL_ERROR "interop.python: the C++ side failed (${rc})")
endif()
file(READ ${DIR}/action_atol.txt atol)
string(STRIP "${atol}" atol)
set(failed "")
foreach(file actor_export.pt mlp_export.pt)
  execute_process(COMMAND ${PYTHON} ${SCRIPTS}/check_export.py --expected ${REFERENCE}/expected_actor_outputs.json --plain --atol ${atol} ${DIR}/${file}
                  RESULT_VARIABLE rc)
  if(NOT rc EQUAL 0)
    list(APPEND failed "check_export.py ${file}")
  endif()
endforeach()
execute_process(COMMAND ${PYTHON} ${SCRIPTS}/check_torchscript.py --atol ${atol} ${DIR}/policy.ts ${DIR}/policy_io.json
                RESULT_VARIABLE rc)
if(NOT rc EQUAL 0)
  list(APPEND failed "check_torchscript.py")
endif()
if(failed)
  message(FATAL_ERROR "interop.python: failed: ${failed}")
endif()
message("interop.python: passed (actions within ${atol}, the derived tolerance)")

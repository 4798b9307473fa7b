# ctest entry deploy.onnxruntime: rlobj's ONNX models run in ONNX Runtime.
#   cmake -DTESTS=<rlobj_tests> -DPYTHON=<python with onnxruntime> -DDIR=<scratch> -DSCRIPT=<run_onnxruntime.py>
#         -P check_onnxruntime.cmake
# The C++ case "deploy: ONNX files for onnxruntime" writes every example policy's model and
# observations, run_onnxruntime.py runs them in ONNX Runtime, and "deploy: check onnxruntime's
# actions" compares the actions with the actors' within the derived tolerance (and checks that
# models with a perturbed weight fail). Skipped, saying why, when PYTHON cannot import onnxruntime.
if(NOT PYTHON)
  message("deploy.onnxruntime: SKIPPED: no Python with onnxruntime (scripts/onnx_env.sh installs it; or configure "
          "with -DRLOBJ_ONNXRUNTIME_PYTHON=/path/to/python)")
  return()
endif()
execute_process(COMMAND ${PYTHON} -c "import onnxruntime; print(onnxruntime.__version__)"
                RESULT_VARIABLE rc OUTPUT_VARIABLE version ERROR_QUIET OUTPUT_STRIP_TRAILING_WHITESPACE)
if(NOT rc EQUAL 0)
  message("deploy.onnxruntime: SKIPPED: \"${PYTHON}\" cannot import onnxruntime (scripts/onnx_env.sh installs it)")
  return()
endif()
message("deploy.onnxruntime: onnxruntime ${version} (${PYTHON})")
file(REMOVE_RECURSE ${DIR})
foreach(step "deploy: ONNX files for onnxruntime" "python" "deploy: check onnxruntime's actions")
  if(step STREQUAL "python")
    execute_process(COMMAND ${PYTHON} ${SCRIPT} ${DIR} RESULT_VARIABLE rc)
  else()
    execute_process(COMMAND ${CMAKE_COMMAND} -E env RLOBJ_DEPLOY_DIR=${DIR} ${TESTS} "${step}" RESULT_VARIABLE rc)
  endif()
  if(NOT rc EQUAL 0)
    message(FATAL_ERROR "deploy.onnxruntime: \"${step}\" failed (${rc})")
  endif()
endforeach()
file(REMOVE_RECURSE ${DIR})
message("deploy.onnxruntime: passed")

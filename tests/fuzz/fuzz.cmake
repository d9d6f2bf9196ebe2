# Fuzz targets (scripts/fuzz.sh runs them). Each <name>_fuzzer.cc defines
# LLVMFuzzerTestOneInput and has a seed corpus in corpus/<name>/.
#
# With BATCHFETCH_FUZZ (clang) each becomes a libFuzzer binary
# fuzz_<name>. In every other build each is linked with
# corpus_replay_main.cc into fuzz_<name>_replay and its corpus runs as the
# CTest test fuzz_<name>_corpus, so the targets keep compiling and the seeds
# (and any crash input added to them) stay regression tests.
set(FUZZ_DIR ${CMAKE_CURRENT_LIST_DIR})

function(batchfetch_fuzz_target name)
  set(source ${FUZZ_DIR}/${name}_fuzzer.cc)
  if(BATCHFETCH_FUZZ)
    set(target fuzz_${name})
    add_executable(${target} ${source})
    target_link_options(${target} PRIVATE -fsanitize=fuzzer)
  else()
    set(target fuzz_${name}_replay)
    add_executable(${target} ${source} ${FUZZ_DIR}/corpus_replay_main.cc)
    add_test(NAME fuzz_${name}_corpus
      COMMAND ${target} ${FUZZ_DIR}/corpus/${name})
  endif()
  target_include_directories(${target} PRIVATE ${PROJECT_SOURCE_DIR}
    ${RAPIDJSON_INCLUDE_DIR})
  target_link_libraries(${target} PRIVATE ${ARGN} batchfetch_warnings)
endfunction()

batchfetch_fuzz_target(json_cleaner batchfetch_json)
batchfetch_fuzz_target(request_validation batchfetch_fetch CURL::libcurl)
batchfetch_fuzz_target(retry_after batchfetch_fetch)
batchfetch_fuzz_target(egress_address batchfetch_fetch)
# The spool's readers (service/store/spool/, issue 9).
if(TARGET batchfetch_spool)
  batchfetch_fuzz_target(spool_record batchfetch_spool)
endif()

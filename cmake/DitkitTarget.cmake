# One helper for every ditkit target, so flags, includes and the precompiled header stay equal
# (the header is compiled once, in ditkit_pch, and reused: every torch-including file pays
# ~30-60 s on two cores otherwise).

add_library(ditkit_pch OBJECT "${CMAKE_SOURCE_DIR}/cmake/pch.cpp")
target_link_libraries(ditkit_pch PUBLIC torch)
target_include_directories(ditkit_pch PUBLIC "${CMAKE_SOURCE_DIR}" "${CMAKE_BINARY_DIR}/generated")
target_precompile_headers(ditkit_pch PRIVATE "$<$<COMPILE_LANGUAGE:CXX>:${CMAKE_SOURCE_DIR}/cmake/pch.h>")

function(ditkit_setup_target target)
  target_include_directories(${target} PUBLIC "${CMAKE_SOURCE_DIR}" "${CMAKE_SOURCE_DIR}/include"
                                              "${CMAKE_BINARY_DIR}/generated")
  target_compile_options(${target} PRIVATE
    $<$<COMPILE_LANGUAGE:CXX>:-Wall -Wextra -Wno-unused-parameter>
    $<$<COMPILE_LANGUAGE:CUDA>:${DITKIT_CUDA_GENCODE} --expt-relaxed-constexpr -lineinfo>)
  target_precompile_headers(${target} REUSE_FROM ditkit_pch)
  # The shared header is built -fPIC; GCC rejects it for -fPIE objects, so executables compile
  # -fPIC too (still linked as position-independent executables, the toolchain default).
  get_target_property(_type ${target} TYPE)
  if(_type STREQUAL "EXECUTABLE")
    set_target_properties(${target} PROPERTIES POSITION_INDEPENDENT_CODE OFF)
    target_compile_options(${target} PRIVATE $<$<COMPILE_LANGUAGE:CXX>:-fPIC>)
  endif()
endfunction()

# ditkit_library(NAME SOURCES ... DEPS ...): one library per top-level folder.
function(ditkit_library name)
  cmake_parse_arguments(ARG "" "" "SOURCES;DEPS" ${ARGN})
  add_library(${name} STATIC ${ARG_SOURCES})
  target_link_libraries(${name} PUBLIC ${ARG_DEPS})
  ditkit_setup_target(${name})
endfunction()

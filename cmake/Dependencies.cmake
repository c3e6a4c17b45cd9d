# Finds everything ditkit builds against. Optional parts report what is missing and
# switch themselves off, because the GPU machine has no FFmpeg or OpenCV.

# --- LibTorch, from the project's virtual environment (the torch==2.11.0 wheel) ---------------
if(NOT Torch_DIR)
  if(EXISTS "${CMAKE_SOURCE_DIR}/.venv/bin/python")
    set(_py "${CMAKE_SOURCE_DIR}/.venv/bin/python")
  else()
    find_program(_py NAMES python3 python REQUIRED)
  endif()
  execute_process(COMMAND "${_py}" -c "import torch; print(torch.utils.cmake_prefix_path)"
                  OUTPUT_VARIABLE _torch_prefix OUTPUT_STRIP_TRAILING_WHITESPACE
                  RESULT_VARIABLE _torch_rc ERROR_QUIET)
  if(NOT _torch_rc EQUAL 0)
    message(FATAL_ERROR "ditkit needs LibTorch: '${_py} -c \"import torch\"' failed. "
                        "Run scripts/setup.sh (it installs torch==2.11.0 into .venv), or pass -DTorch_DIR=...")
  endif()
  list(APPEND CMAKE_PREFIX_PATH "${_torch_prefix}")
endif()

# Torch's own CMake logic adds gencode flags from this list; keep it at Hopper so nothing else sneaks in.
if(NOT DEFINED ENV{TORCH_CUDA_ARCH_LIST})
  set(ENV{TORCH_CUDA_ARCH_LIST} "9.0a")
endif()

set(DITKIT_HAVE_CUDA OFF)
if(DITKIT_CUDA)
  include(CheckLanguage)
  check_language(CUDA)
  if(CMAKE_CUDA_COMPILER)
    enable_language(CUDA)
    set(CMAKE_CUDA_STANDARD 17)
    set(CMAKE_CUDA_ARCHITECTURES OFF)  # explicit -gencode flags below
    find_package(CUDAToolkit REQUIRED)
    set(DITKIT_HAVE_CUDA ON)
  else()
    message(STATUS "ditkit: no nvcc found, building without the CUDA kernels")
  endif()
endif()

find_package(Torch REQUIRED)

# --- CUTLASS/CuTe headers, for the Hopper attention kernel: the nvidia-cutlass wheel in .venv
# (scripts/setup.sh), or the copy carried to the GPU machine in .deps (scripts/pack_device_deps.sh).
if(DITKIT_HAVE_CUDA)
  set(DITKIT_CUTLASS_DIR "" CACHE PATH "CUTLASS include folder (holds cute/ and cutlass/)")
  if(NOT DITKIT_CUTLASS_DIR)
    set(_cutlass_hint "")
    if(EXISTS "${CMAKE_SOURCE_DIR}/.venv/bin/python")
      execute_process(COMMAND "${CMAKE_SOURCE_DIR}/.venv/bin/python" -c
                              "import cutlass_library, os; print(os.path.dirname(cutlass_library.__file__))"
                      OUTPUT_VARIABLE _cutlass_hint OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
    endif()
    find_path(_cutlass_dir cute/tensor.hpp NO_DEFAULT_PATH
              HINTS "${_cutlass_hint}/source/include" "${CMAKE_SOURCE_DIR}/.deps/cutlass/include")
    if(NOT _cutlass_dir)
      message(FATAL_ERROR "ditkit's CUDA kernels need the CUTLASS/CuTe headers: run scripts/setup.sh (it "
                          "installs nvidia-cutlass into .venv), pass -DDITKIT_CUTLASS_DIR=..., or -DDITKIT_CUDA=OFF")
    endif()
    set(DITKIT_CUTLASS_DIR "${_cutlass_dir}" CACHE PATH "" FORCE)
  endif()
  message(STATUS "ditkit: CUTLASS headers in ${DITKIT_CUTLASS_DIR}")
endif()
# Hopper code (wgmma, setmaxnreg need sm_90a) plus PTX that any sm_80+ GPU can JIT.
set(DITKIT_CUDA_GENCODE -gencode=arch=compute_90a,code=sm_90a -gencode=arch=compute_80,code=compute_80)

# --- header-only helpers --------------------------------------------------------------------
# The installed CMake package, or else the bare header (the GPU machine gets them carried in
# .deps/include, see scripts/pack_device_deps.sh).
function(ditkit_header_only package target header debian_package)
  find_package(${package} QUIET)
  if(${package}_FOUND)
    return()
  endif()
  find_path(_dir_${package} ${header} HINTS "${DITKIT_EXTRA_INCLUDE}")
  if(NOT _dir_${package})
    message(FATAL_ERROR "ditkit needs ${header} (Debian: ${debian_package}, or -DDITKIT_EXTRA_INCLUDE=DIR)")
  endif()
  add_library(${target} INTERFACE IMPORTED GLOBAL)
  target_include_directories(${target} INTERFACE "${_dir_${package}}")
endfunction()
ditkit_header_only(nlohmann_json nlohmann_json::nlohmann_json nlohmann/json.hpp nlohmann-json3-dev)
ditkit_header_only(CLI11 CLI11::CLI11 CLI/CLI.hpp libcli11-dev)

# --- optional media libraries ---------------------------------------------------------------
find_package(PkgConfig QUIET)
set(DITKIT_HAVE_FFMPEG OFF)
if(DITKIT_FFMPEG AND PkgConfig_FOUND)
  pkg_check_modules(FFMPEG QUIET IMPORTED_TARGET libavformat libavcodec libavutil libswscale)
  if(FFMPEG_FOUND)
    set(DITKIT_HAVE_FFMPEG ON)
  endif()
endif()
if(DITKIT_FFMPEG AND NOT DITKIT_HAVE_FFMPEG)
  message(STATUS "ditkit: FFmpeg libraries (libavformat/libavcodec/libavutil/libswscale) not found: "
                 ".mp4 output is off; .y4m and PNG folders still work")
endif()

# Found by header and library names: Debian ships OpenCVConfig.cmake only in libopencv-dev, which
# drags in every OpenCV module (VTK, Qt, ...), while these four -dev packages are enough.
set(DITKIT_HAVE_OPENCV OFF)
if(DITKIT_OPENCV)
  find_path(OPENCV_INCLUDE opencv2/core.hpp PATH_SUFFIXES opencv4)
  set(_cv_libs)
  foreach(_m core imgproc imgcodecs videoio)
    find_library(OPENCV_${_m}_LIB opencv_${_m})
    list(APPEND _cv_libs ${OPENCV_${_m}_LIB})
  endforeach()
  if(OPENCV_INCLUDE AND OPENCV_core_LIB AND OPENCV_imgproc_LIB AND OPENCV_imgcodecs_LIB AND OPENCV_videoio_LIB)
    add_library(ditkit_opencv INTERFACE)
    target_include_directories(ditkit_opencv INTERFACE "${OPENCV_INCLUDE}")
    target_link_libraries(ditkit_opencv INTERFACE ${_cv_libs})
    set(DITKIT_HAVE_OPENCV ON)
  else()
    message(STATUS "ditkit: OpenCV (core, imgproc, imgcodecs, videoio) not found: "
                   "tests that read video back through OpenCV are skipped")
  endif()
endif()

set(DITKIT_HAVE_SENTENCEPIECE OFF)
if(PkgConfig_FOUND)
  pkg_check_modules(SENTENCEPIECE QUIET IMPORTED_TARGET sentencepiece)
  if(SENTENCEPIECE_FOUND)
    set(DITKIT_HAVE_SENTENCEPIECE ON)
  endif()
endif()
if(NOT DITKIT_HAVE_SENTENCEPIECE)
  message(STATUS "ditkit: sentencepiece not found: tokenizing prompts is off (the text encoder still builds)")
endif()

# --- c10d's collective backends, for sequence parallelism (dit/sequence_parallel.cpp) ---------
# LibTorch has both compiled in (Gloo in libtorch_cpu, NCCL in libtorch_cuda), but its c10d
# headers include Gloo's and NCCL's own: Gloo's come from Debian's libgloo-dev (the GPU machine has
# none: its ranks use NCCL), nccl.h from the nvidia-nccl wheel that torch pulls in.
find_path(DITKIT_GLOO_INCLUDE gloo/algorithm.h)
set(DITKIT_HAVE_GLOO OFF)
if(DITKIT_GLOO_INCLUDE)
  set(DITKIT_HAVE_GLOO ON)
else()
  message(STATUS "ditkit: gloo headers (Debian libgloo-dev) not found: sequence parallelism on CPU ranks is off")
endif()
set(DITKIT_HAVE_NCCL OFF)
if(DITKIT_HAVE_CUDA)
  set(_nccl_hint "")
  if(NOT _py)
    find_program(_py NAMES python3 python)
  endif()
  if(_py)
    execute_process(COMMAND "${_py}" -c "import nvidia.nccl, os; print(list(nvidia.nccl.__path__)[0])"
                    OUTPUT_VARIABLE _nccl_hint OUTPUT_STRIP_TRAILING_WHITESPACE ERROR_QUIET)
  endif()
  find_path(DITKIT_NCCL_INCLUDE nccl.h HINTS "${_nccl_hint}/include")
  if(DITKIT_NCCL_INCLUDE)
    set(DITKIT_HAVE_NCCL ON)
  else()
    message(STATUS "ditkit: nccl.h not found: sequence parallelism on GPUs is off")
  endif()
endif()

find_package(ZLIB QUIET)  # PNG compression; without it PNGs are written uncompressed
if(ZLIB_FOUND)
  set(ZLIB_FOUND_01 1)
else()
  set(ZLIB_FOUND_01 0)
endif()

# --- tests and benchmarks -------------------------------------------------------------------
if(DITKIT_TESTS)
  find_package(GTest QUIET)
  if(NOT GTest_FOUND)
    if(DITKIT_GTEST_SOURCE)
      set(INSTALL_GTEST OFF CACHE BOOL "" FORCE)
      add_subdirectory("${DITKIT_GTEST_SOURCE}" "${CMAKE_BINARY_DIR}/_gtest" EXCLUDE_FROM_ALL)
      add_library(GTest::gtest ALIAS gtest)
      add_library(GTest::gtest_main ALIAS gtest_main)
    else()
      message(FATAL_ERROR "ditkit tests need GoogleTest (Debian: libgtest-dev, or -DDITKIT_GTEST_SOURCE=DIR, "
                          "or -DDITKIT_TESTS=OFF)")
    endif()
  endif()
endif()

set(DITKIT_HAVE_BENCHMARK OFF)
if(DITKIT_BENCH)
  find_package(benchmark QUIET)
  if(benchmark_FOUND)
    set(DITKIT_HAVE_BENCHMARK ON)
  else()
    message(STATUS "ditkit: Google Benchmark not found: bench/ programs are skipped")
  endif()
endif()

configure_file("${CMAKE_SOURCE_DIR}/cmake/ditkit_config.h.in" "${CMAKE_BINARY_DIR}/generated/ditkit_config.h")

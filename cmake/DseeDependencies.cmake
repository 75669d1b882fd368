# Finds every third-party dependency of dsee and exposes each one as a target.
#
#   dsee::torch    LibTorch from the PyPI torch wheel (torch_cuda linked even
#                  under --as-needed, so CUDA is usable when a GPU exists)
#   MPI::MPI_CXX   Open MPI
#   dsee::nccl     NCCL (only when DSEE_HAVE_NCCL)
#   dsee::hdf5     HDF5 C library, include dirs and libraries only
#   spdlog, fmt, tomlplusplus, nlohmann_json, CLI11, utf8proc, GTest
#
# Where things come from (override any of them on the cmake command line or
# through launch/setup, see README "Using existing installs"):
#   DSEE_PYTHON        python whose torch wheel provides LibTorch
#                      (default: <repo>/.venv/bin/python)
#   DSEE_TORCH_PREFIX  a LibTorch prefix (contains share/cmake/Torch); skips python
#   MPI_HOME           Open MPI prefix (CMake's FindMPI)
#   HDF5_ROOT          HDF5 prefix (CMake's FindHDF5)
#   NCCL_ROOT          NCCL prefix (include/nccl.h, lib/libnccl.so*)

# ---------------------------------------------------------------- LibTorch
set(DSEE_PYTHON "${CMAKE_SOURCE_DIR}/.venv/bin/python" CACHE FILEPATH
    "Python interpreter whose torch provides LibTorch")
set(DSEE_TORCH_PREFIX "" CACHE PATH "LibTorch prefix; empty: ask DSEE_PYTHON")

if(NOT DSEE_TORCH_PREFIX)
  if(NOT EXISTS "${DSEE_PYTHON}")
    message(FATAL_ERROR
      "dsee: no Python at DSEE_PYTHON='${DSEE_PYTHON}'. Run ./launch/setup to "
      "create .venv with the pinned torch, or pass -DDSEE_PYTHON=/path/to/python "
      "(a python with torch installed) or -DDSEE_TORCH_PREFIX=/path/to/libtorch.")
  endif()
  execute_process(
    COMMAND "${DSEE_PYTHON}" -c
      "import torch, torch.utils, os; print(torch.utils.cmake_prefix_path); print(torch.__version__); print(torch.version.cuda or '')"
    OUTPUT_VARIABLE _dsee_torch_out RESULT_VARIABLE _dsee_torch_rc
    ERROR_VARIABLE _dsee_torch_err OUTPUT_STRIP_TRAILING_WHITESPACE)
  if(NOT _dsee_torch_rc EQUAL 0)
    message(FATAL_ERROR "dsee: '${DSEE_PYTHON}' cannot import torch:\n${_dsee_torch_err}\n"
      "Run ./launch/setup, or point DSEE_PYTHON at a python that has torch.")
  endif()
  string(REPLACE "\n" ";" _dsee_torch_out "${_dsee_torch_out}")
  list(GET _dsee_torch_out 0 _dsee_torch_cmake)
  list(GET _dsee_torch_out 1 DSEE_TORCH_PY_VERSION)
  list(LENGTH _dsee_torch_out _n)
  set(DSEE_TORCH_PY_CUDA "")
  if(_n GREATER 2)
    list(GET _dsee_torch_out 2 DSEE_TORCH_PY_CUDA)
  endif()
  get_filename_component(DSEE_TORCH_PREFIX_RESOLVED "${_dsee_torch_cmake}/../.." ABSOLUTE)
else()
  set(_dsee_torch_cmake "${DSEE_TORCH_PREFIX}/share/cmake")
  set(DSEE_TORCH_PREFIX_RESOLVED "${DSEE_TORCH_PREFIX}")
endif()

# The CUDA wheel's TorchConfig insists on a CUDA toolkit. Without one (or with
# DSEE_WITH_CUDA=OFF) we link the wheel's libraries directly: the CPU code
# paths work the same, CUDA stays unused, and the NCCL backend is off.
set(DSEE_HAVE_CUDA_TOOLKIT OFF)
if(DSEE_WITH_CUDA)
  find_package(CUDAToolkit QUIET)
  if(CUDAToolkit_FOUND)
    set(DSEE_HAVE_CUDA_TOOLKIT ON)
  endif()
endif()

add_library(dsee_torch INTERFACE)
add_library(dsee::torch ALIAS dsee_torch)
if(DSEE_HAVE_CUDA_TOOLKIT)
  list(APPEND CMAKE_PREFIX_PATH "${_dsee_torch_cmake}")
  # dsee compiles no CUDA kernels of its own; naming the architectures stops
  # TorchConfig from probing the (absent) GPU with a test program.
  set(TORCH_CUDA_ARCH_LIST "8.0;9.0" CACHE STRING "CUDA architectures (no GPU probe)")
  set(CMAKE_CUDA_STANDARD 17)
  find_package(Torch REQUIRED)
  target_link_libraries(dsee_torch INTERFACE ${TORCH_LIBRARIES})
  target_include_directories(dsee_torch SYSTEM INTERFACE ${TORCH_INCLUDE_DIRS})
  separate_arguments(_dsee_torch_flags UNIX_COMMAND "${TORCH_CXX_FLAGS}")
  target_compile_options(dsee_torch INTERFACE ${_dsee_torch_flags})
  set(DSEE_TORCH_LIBDIR "${DSEE_TORCH_PREFIX_RESOLVED}/lib")
else()
  set(DSEE_TORCH_LIBDIR "${DSEE_TORCH_PREFIX_RESOLVED}/lib")
  foreach(_lib torch torch_cpu c10)
    find_library(DSEE_LIB_${_lib} ${_lib} PATHS "${DSEE_TORCH_LIBDIR}" NO_DEFAULT_PATH REQUIRED)
    target_link_libraries(dsee_torch INTERFACE "${DSEE_LIB_${_lib}}")
  endforeach()
  target_include_directories(dsee_torch SYSTEM INTERFACE
    "${DSEE_TORCH_PREFIX_RESOLVED}/include"
    "${DSEE_TORCH_PREFIX_RESOLVED}/include/torch/csrc/api/include")
  target_compile_definitions(dsee_torch INTERFACE _GLIBCXX_USE_CXX11_ABI=1)
  message(STATUS "dsee: no CUDA toolkit in use; linking LibTorch's CPU libraries "
                 "from ${DSEE_TORCH_LIBDIR}; CUDA and the NCCL backend are off")
endif()
# torch_cuda registers the CUDA backend from static initialisers; nothing
# references it by symbol, so --as-needed would drop it and
# torch::cuda::is_available() would say false on a GPU machine.
find_library(DSEE_LIB_torch_cuda torch_cuda PATHS "${DSEE_TORCH_LIBDIR}" NO_DEFAULT_PATH)
if(DSEE_HAVE_CUDA_TOOLKIT AND DSEE_LIB_torch_cuda)
  target_link_options(dsee_torch INTERFACE
    "LINKER:--no-as-needed,${DSEE_LIB_torch_cuda},--as-needed")
endif()
set_property(TARGET dsee_torch APPEND PROPERTY INTERFACE_LINK_OPTIONS
             "LINKER:-rpath,${DSEE_TORCH_LIBDIR}")
message(STATUS "dsee: LibTorch from ${DSEE_TORCH_PREFIX_RESOLVED} "
               "(python torch ${DSEE_TORCH_PY_VERSION}, CUDA ${DSEE_TORCH_PY_CUDA})")

# ---------------------------------------------------------------- MPI
find_package(MPI REQUIRED COMPONENTS CXX)

# ---------------------------------------------------------------- NCCL
# Compile and load the same NCCL: prefer the one shipped next to torch in the
# wheel (the library torch_cuda itself loads), then NCCL_ROOT, then the toolkit.
set(DSEE_HAVE_NCCL OFF)
if(DSEE_HAVE_CUDA_TOOLKIT)
  get_filename_component(_dsee_site "${DSEE_TORCH_PREFIX_RESOLVED}/.." ABSOLUTE)
  set(_dsee_nccl_hints "${_dsee_site}/nvidia/nccl" "$ENV{NCCL_ROOT}" "${NCCL_ROOT}"
                       "${CUDAToolkit_LIBRARY_ROOT}" /usr/local/cuda)
  find_path(DSEE_NCCL_INCLUDE_DIR nccl.h HINTS ${_dsee_nccl_hints}
            PATH_SUFFIXES include NO_DEFAULT_PATH)
  find_library(DSEE_NCCL_LIBRARY NAMES libnccl.so.2 nccl NAMES_PER_DIR HINTS ${_dsee_nccl_hints}
               PATH_SUFFIXES lib lib64 NO_DEFAULT_PATH)
  if(DSEE_NCCL_INCLUDE_DIR AND DSEE_NCCL_LIBRARY)
    set(DSEE_HAVE_NCCL ON)
    add_library(dsee_nccl INTERFACE)
    add_library(dsee::nccl ALIAS dsee_nccl)
    target_include_directories(dsee_nccl SYSTEM INTERFACE "${DSEE_NCCL_INCLUDE_DIR}")
    target_link_libraries(dsee_nccl INTERFACE "${DSEE_NCCL_LIBRARY}" CUDA::cudart)
    message(STATUS "dsee: NCCL backend on: ${DSEE_NCCL_INCLUDE_DIR}/nccl.h, ${DSEE_NCCL_LIBRARY}")
  endif()
endif()
if(DSEE_HAVE_CUDA_TOOLKIT AND NOT DSEE_HAVE_NCCL)
  message(STATUS "dsee: NCCL backend OFF (no nccl.h/libnccl found; set NCCL_ROOT); "
                 "collectives use MPI only")
endif()

# ---------------------------------------------------------------- HDF5
# Only include dirs and libraries: HDF5's compile definitions would differ
# between targets and invalidate the shared precompiled header.
find_package(HDF5 REQUIRED COMPONENTS C)
add_library(dsee_hdf5 INTERFACE)
add_library(dsee::hdf5 ALIAS dsee_hdf5)
target_include_directories(dsee_hdf5 SYSTEM INTERFACE ${HDF5_C_INCLUDE_DIRS} ${HDF5_INCLUDE_DIRS})
target_link_libraries(dsee_hdf5 INTERFACE ${HDF5_C_LIBRARIES})

# ---------------------------------------------------------------- small libraries
find_package(spdlog REQUIRED)
find_package(fmt REQUIRED)
# Note [two fmt]: the torch wheel ships fmt 12 headers in its include/ folder,
# which is searched before /usr/include, so spdlog (built against the system
# fmt 9) would compile against the wrong fmt. A folder holding only a link to
# the system fmt, searched ahead of torch's includes, keeps one fmt per build.
get_target_property(_dsee_fmt_inc fmt::fmt INTERFACE_INCLUDE_DIRECTORIES)
find_path(DSEE_FMT_INCLUDE_DIR fmt/format.h HINTS ${_dsee_fmt_inc} NO_DEFAULT_PATH)
if(NOT DSEE_FMT_INCLUDE_DIR)
  find_path(DSEE_FMT_INCLUDE_DIR fmt/format.h REQUIRED)
endif()
set(_dsee_fmt_first "${CMAKE_BINARY_DIR}/include-fmt-first")
file(MAKE_DIRECTORY "${_dsee_fmt_first}")
file(CREATE_LINK "${DSEE_FMT_INCLUDE_DIR}/fmt" "${_dsee_fmt_first}/fmt" SYMBOLIC)
target_include_directories(dsee_torch SYSTEM BEFORE INTERFACE "${_dsee_fmt_first}")
find_package(tomlplusplus REQUIRED)
find_package(nlohmann_json 3.10 REQUIRED)
find_package(CLI11 REQUIRED)
find_package(PkgConfig REQUIRED)
pkg_check_modules(UTF8PROC REQUIRED IMPORTED_TARGET libutf8proc)
if(DSEE_BUILD_TESTS)
  find_package(GTest REQUIRED)
endif()

# ---------------------------------------------------------------- shared PCH
# One precompiled header for the LibTorch includes, reused by every target
# (REUSE_FROM needs identical compile flags, which the targets share).
add_library(dsee_pch OBJECT ${CMAKE_SOURCE_DIR}/cmake/dsee_pch.cpp)
target_link_libraries(dsee_pch PRIVATE dsee::torch spdlog::spdlog fmt::fmt dsee_warnings)
target_precompile_headers(dsee_pch PRIVATE <torch/torch.h> <spdlog/spdlog.h>
                          <fmt/format.h> <string> <vector> <memory>)

# Compiler settings shared by every dsee target: warnings, ccache, and the one
# precompiled header for LibTorch that every target reuses.

# ccache keeps its cache outside the clone (CCACHE_DIR; launch/setup: ~/.cache/dsee-ccache),
# so a fresh clone on the same machine rebuilds from cache (CCACHE_BASEDIR makes
# paths inside the clone relative, so a clone elsewhere hits the same entries). The sloppiness
# settings let ccache cache compilations that use the precompiled header.
find_program(DSEE_CCACHE ccache)
if(DSEE_CCACHE AND NOT CMAKE_CXX_COMPILER_LAUNCHER)
  set(CMAKE_CXX_COMPILER_LAUNCHER
      ${CMAKE_COMMAND} -E env
      "CCACHE_SLOPPINESS=pch_defines,time_macros,include_file_mtime,include_file_ctime"
      "CCACHE_BASEDIR=${CMAKE_SOURCE_DIR}"
      ${DSEE_CCACHE})
  message(STATUS "dsee: compiling through ccache (${DSEE_CCACHE})")
endif()

# dsee_warnings: an interface target every dsee target links privately.
add_library(dsee_warnings INTERFACE)
target_compile_options(dsee_warnings INTERFACE -Wall -Wextra -Wno-unused-parameter)
if(DSEE_WERROR)
  target_compile_options(dsee_warnings INTERFACE -Werror)
endif()

# dsee_target_defaults(TARGET): warnings and the shared LibTorch precompiled
# header (built once by dsee_pch, see cmake/dsee_pch.cpp).
function(dsee_target_defaults target)
  target_link_libraries(${target} PRIVATE dsee_warnings)
  if(TARGET dsee_pch)
    target_precompile_headers(${target} REUSE_FROM dsee_pch)
  endif()
endfunction()

# dsee_library(NAME SOURCES...): one folder, one library. Its headers are
# included as "NAME/header.h" through an include directory that holds only a
# link to this folder, so a target sees the headers of itself and of what it
# links, and an include that points up the layering fails to compile.
function(dsee_library name)
  add_library(${name} ${ARGN})
  set(include_root ${CMAKE_BINARY_DIR}/include/${name})
  file(MAKE_DIRECTORY ${include_root})
  if(NOT EXISTS ${include_root}/${name})
    file(CREATE_LINK ${CMAKE_CURRENT_SOURCE_DIR} ${include_root}/${name} SYMBOLIC)
  endif()
  target_include_directories(${name} PUBLIC ${include_root})
  dsee_target_defaults(${name})
endfunction()

// Empty translation unit: it exists so that CMake builds the shared
// precompiled header (see cmake/DseeCompileOptions.cmake) that every dsee
// target reuses.

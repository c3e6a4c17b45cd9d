# `cmake --install`: the library, its headers, the tools, the shipped assets, a CMake package
# (find_package(ditkit) gives ditkit::ditkit) and ditkit.pc. Everything installed is relocatable:
# paths inside are relative to the installed files.
include(CMakePackageConfigHelpers)

set(DITKIT_CMAKE_DIR "${CMAKE_INSTALL_LIBDIR}/cmake/ditkit")
set(_tools)
foreach(_tool dit-gen dit-ab dit-profile dit-calibrate dit-bench dit-train dit-adherence)
  if(TARGET ${_tool})
    list(APPEND _tools ${_tool})
  endif()
endforeach()
# LibTorch stays where it was found (the .venv's torch wheel): installed binaries keep a run path
# to it (torch's libraries are linked by full path, so it is named here), and to the other
# libraries' folders outside the system's, so apps link libditkit.so alone and never see torch.
set_target_properties(ditkit ${_tools} PROPERTIES INSTALL_RPATH "${TORCH_INSTALL_PREFIX}/lib"
                                                  INSTALL_RPATH_USE_LINK_PATH TRUE)

install(TARGETS ditkit EXPORT ditkitTargets LIBRARY DESTINATION "${CMAKE_INSTALL_LIBDIR}")
install(TARGETS ${_tools} RUNTIME DESTINATION "${CMAKE_INSTALL_BINDIR}")
install(FILES include/ditkit/ditkit.h include/ditkit/ditkit_c.h DESTINATION "${CMAKE_INSTALL_INCLUDEDIR}/ditkit")
if(EXISTS "${CMAKE_SOURCE_DIR}/assets")
  install(DIRECTORY assets/ DESTINATION "${CMAKE_INSTALL_DATADIR}/ditkit")
endif()

install(EXPORT ditkitTargets NAMESPACE ditkit:: DESTINATION "${DITKIT_CMAKE_DIR}")
configure_package_config_file(cmake/ditkitConfig.cmake.in "${CMAKE_BINARY_DIR}/package/ditkitConfig.cmake"
                              INSTALL_DESTINATION "${DITKIT_CMAKE_DIR}")
# 0.x: only the same minor version is compatible.
write_basic_package_version_file("${CMAKE_BINARY_DIR}/package/ditkitConfigVersion.cmake"
                                 COMPATIBILITY SameMinorVersion)
install(FILES "${CMAKE_BINARY_DIR}/package/ditkitConfig.cmake" "${CMAKE_BINARY_DIR}/package/ditkitConfigVersion.cmake"
        DESTINATION "${DITKIT_CMAKE_DIR}")

# pkg-config: the prefix is found from the .pc file's own folder.
set(_pc_dir "${CMAKE_INSTALL_LIBDIR}/pkgconfig")
file(RELATIVE_PATH DITKIT_PC_TO_PREFIX "/prefix/${_pc_dir}" "/prefix")
string(REGEX REPLACE "/$" "" DITKIT_PC_TO_PREFIX "${DITKIT_PC_TO_PREFIX}")
configure_file(cmake/ditkit.pc.in "${CMAKE_BINARY_DIR}/package/ditkit.pc" @ONLY)
install(FILES "${CMAKE_BINARY_DIR}/package/ditkit.pc" DESTINATION "${_pc_dir}")

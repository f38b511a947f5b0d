# The installed CMake package (find_package(qwen) -> qwen::qwen) and pkg-config file (qwen.pc).
# libqwen is static, so both carry its link dependencies: threads, and the CUDA runtime and cuBLAS
# when the CUDA backend is built in.
include(CMakePackageConfigHelpers)
set(QWEN_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/qwen)
install(EXPORT qwenTargets NAMESPACE qwen:: DESTINATION ${QWEN_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/qwenConfig.cmake.in
                              ${CMAKE_BINARY_DIR}/qwenConfig.cmake INSTALL_DESTINATION ${QWEN_CMAKE_DIR})
write_basic_package_version_file(${CMAKE_BINARY_DIR}/qwenConfigVersion.cmake
                                 VERSION ${PROJECT_VERSION} COMPATIBILITY SameMinorVersion)
install(FILES ${CMAKE_BINARY_DIR}/qwenConfig.cmake ${CMAKE_BINARY_DIR}/qwenConfigVersion.cmake
        DESTINATION ${QWEN_CMAKE_DIR})

set(QWEN_PC_LIBS "-lqwen -pthread")
if(QWEN_HAVE_CUDA)
  string(APPEND QWEN_PC_LIBS " -L${CUDAToolkit_LIBRARY_DIR} -lcublasLt -lcublas -lcudart")
endif()
# prefix relative to the .pc file itself, so that `cmake --install --prefix DIR` stays correct.
file(RELATIVE_PATH QWEN_PC_PREFIX /prefix/${CMAKE_INSTALL_LIBDIR}/pkgconfig /prefix)
configure_file(${CMAKE_CURRENT_LIST_DIR}/qwen.pc.in ${CMAKE_BINARY_DIR}/qwen.pc @ONLY)
install(FILES ${CMAKE_BINARY_DIR}/qwen.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)

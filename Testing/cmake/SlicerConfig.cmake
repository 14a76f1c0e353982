# Stub of the SlicerConfig.cmake that a Slicer build tree provides, for checking SemiSAM's CMake files
# without building Slicer:   cmake -S . -B build -DSlicer_DIR=<repo>/Testing/cmake
#
# It defines the variables and macros an extension uses (find_package(Slicer), Slicer_USE_FILE,
# slicerMacroBuildScriptedModule, slicer_add_python_unittest, Slicer_EXTENSION_GENERATE_CONFIG,
# Slicer_EXTENSION_CPACK) with the argument checks of the real ones (Slicer's
# CMake/SlicerMacroBuildScriptedModule.cmake): an unknown keyword, a missing NAME or a listed file that
# does not exist is a configure error. It also fails where the real build would silently misplace files
# (a script path that leaves the module folder), and writes what each module would carry to
# <build>/SemiSAMStubManifest/<NAME>.txt so tests can check it. It builds nothing.

set(Slicer_FOUND TRUE)
set(SLICER_STUB TRUE)
set(Slicer_VERSION_MAJOR 5)
set(Slicer_VERSION_MINOR 8)
set(Slicer_USE_PYTHONQT TRUE)
set(Slicer_QTSCRIPTEDMODULES_LIB_DIR "lib/Slicer-5.8/qt-scripted-modules")
set(Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR "${Slicer_QTSCRIPTEDMODULES_LIB_DIR}")
set(Slicer_USE_FILE "${CMAKE_CURRENT_LIST_DIR}/UseSlicer.cmake")
set(Slicer_EXTENSION_GENERATE_CONFIG "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionGenerateConfig.cmake")
set(Slicer_EXTENSION_CPACK "${CMAKE_CURRENT_LIST_DIR}/SlicerExtensionCPack.cmake")

# Stub of Slicer's SlicerExtensionCPack.cmake: packaging needs Slicer_USE_FILE to have been included first.
if(NOT COMMAND slicerMacroBuildScriptedModule)
  message(FATAL_ERROR "include(\${Slicer_USE_FILE}) must come before include(\${Slicer_EXTENSION_CPACK})")
endif()

# Stub of Slicer's SlicerExtensionGenerateConfig.cmake: the extension metadata must be complete.
foreach(var EXTENSION_HOMEPAGE EXTENSION_CATEGORY EXTENSION_CONTRIBUTORS EXTENSION_DESCRIPTION
            EXTENSION_ICONURL EXTENSION_SCREENSHOTURLS EXTENSION_DEPENDS)
  if(NOT DEFINED ${var} OR "${${var}}" STREQUAL "")
    message(FATAL_ERROR "${var} is not set: Slicer needs it to describe extension '${PROJECT_NAME}'")
  endif()
endforeach()
foreach(var EXTENSION_HOMEPAGE EXTENSION_ICONURL)
  if(NOT "${${var}}" MATCHES "^https://")
    message(FATAL_ERROR "${var} must be an https:// URL, got '${${var}}'")
  endif()
endforeach()
file(WRITE "${CMAKE_BINARY_DIR}/SemiSAMStubManifest/extension.txt"
  "NAME ${PROJECT_NAME}\nCATEGORY ${EXTENSION_CATEGORY}\nDEPENDS ${EXTENSION_DEPENDS}\n")

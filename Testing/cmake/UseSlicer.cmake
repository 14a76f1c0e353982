# Stub of Slicer's UseSlicer.cmake: the macros scripted-module extensions call.
include_guard(GLOBAL)

if(NOT DEFINED BUILD_TESTING)
  set(BUILD_TESTING ON)
endif()

set(_semisam_stub_manifest_dir "${CMAKE_BINARY_DIR}/SemiSAMStubManifest")
file(MAKE_DIRECTORY "${_semisam_stub_manifest_dir}")

# Same keywords and checks as Slicer's slicerMacroBuildScriptedModule.
function(slicerMacroBuildScriptedModule)
  set(options WITH_GENERIC_TESTS WITH_SUBDIR VERBOSE)
  set(oneValueArgs NAME)
  set(multiValueArgs SCRIPTS RESOURCES)
  cmake_parse_arguments(MY_SLICER "${options}" "${oneValueArgs}" "${multiValueArgs}" ${ARGN})

  if(MY_SLICER_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicerMacroBuildScriptedModule(): \"${MY_SLICER_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT DEFINED MY_SLICER_NAME)
    message(FATAL_ERROR "NAME is mandatory")
  endif()
  if(NOT MY_SLICER_SCRIPTS)
    message(FATAL_ERROR "slicerMacroBuildScriptedModule(${MY_SLICER_NAME}): no SCRIPTS given")
  endif()

  set(manifest "")
  foreach(var SCRIPTS RESOURCES)
    foreach(value ${MY_SLICER_${var}})
      if(IS_ABSOLUTE "${value}")
        set(value_absolute "${value}")
      else()
        set(value_absolute "${CMAKE_CURRENT_SOURCE_DIR}/${value}")
      endif()
      # Like the real macro, a script may be named without its .py suffix.
      if(NOT EXISTS "${value_absolute}" AND NOT EXISTS "${value_absolute}.py")
        message(FATAL_ERROR
          "slicerMacroBuildScriptedModule(${var}) given nonexistent file or directory '${value}'")
      endif()
      # Where ctkMacroCompilePythonScript puts it inside the qt-scripted-modules folder: relative paths as
      # given, absolute script paths relative to CMAKE_CURRENT_BINARY_DIR. Anything that would land
      # outside that folder is an error here (the real build would silently misplace it).
      if(IS_ABSOLUTE "${value}")
        if(var STREQUAL "RESOURCES")
          message(FATAL_ERROR "slicerMacroBuildScriptedModule(RESOURCES) given absolute path '${value}': "
            "ctkMacroCompilePythonScript only places relative resource paths")
        endif()
        file(RELATIVE_PATH destination "${CMAKE_CURRENT_BINARY_DIR}" "${value}")
      else()
        set(destination "${value}")
      endif()
      if(destination MATCHES "^\\.\\./" OR destination MATCHES "/\\.\\./")
        message(FATAL_ERROR "slicerMacroBuildScriptedModule(${var}) '${value}' would be installed outside "
          "the scripted-modules folder (as '${destination}')")
      endif()
      string(APPEND manifest "${var} ${destination}\n")
    endforeach()
  endforeach()
  file(WRITE "${_semisam_stub_manifest_dir}/${MY_SLICER_NAME}.txt" "${manifest}")
  message(STATUS "Configuring Scripted module: ${MY_SLICER_NAME} (stub)")
endfunction()

# Same keywords as Slicer's slicer_add_python_unittest; the script must exist.
function(slicer_add_python_unittest)
  set(options)
  set(oneValueArgs TESTNAME_PREFIX SCRIPT)
  set(multiValueArgs SLICER_ARGS)
  cmake_parse_arguments(MY "${options}" "${oneValueArgs}" "${multiValueArgs}" ${ARGN})
  if(MY_UNPARSED_ARGUMENTS)
    message(FATAL_ERROR "Unknown keywords given to slicer_add_python_unittest(): \"${MY_UNPARSED_ARGUMENTS}\"")
  endif()
  if(NOT EXISTS "${CMAKE_CURRENT_SOURCE_DIR}/${MY_SCRIPT}")
    message(FATAL_ERROR "slicer_add_python_unittest() given nonexistent SCRIPT '${MY_SCRIPT}'")
  endif()
endfunction()

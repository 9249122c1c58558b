# Read by cpack (CPACK_PROJECT_CONFIG_FILE). The .deb's unit and pkg-config
# file carry the prefix the tree was configured with, so only /usr makes a
# package whose paths are right.
if(CPACK_GENERATOR STREQUAL "DEB" AND
   NOT CPACK_PACKAGING_INSTALL_PREFIX STREQUAL "/usr")
  message(FATAL_ERROR "the .deb needs a tree configured with "
    "-DCMAKE_INSTALL_PREFIX=/usr (this one: ${CPACK_PACKAGING_INSTALL_PREFIX});"
    " use deploy/build-deb.sh")
endif()

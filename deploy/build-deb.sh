#!/usr/bin/env bash
# Builds qraft_<version>_amd64.deb: configures a tree for /usr without the
# tests (build-deb/ by default), builds it and runs cpack there.
#
#   deploy/build-deb.sh [BUILD_DIR]
#
# Prints the path of the .deb on its last line.
set -euo pipefail

src="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dir="${1:-$src/build-deb}"

cmake -S "$src" -B "$dir" -DCMAKE_INSTALL_PREFIX=/usr -DBUILD_TESTING=OFF \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo -DQRAFT_WERROR=ON >/dev/null
nice cmake --build "$dir" -j"${QRAFT_BUILD_JOBS:-2}" >/dev/null
version=$(sed -n 's/^project(qraft VERSION \([0-9.]*\).*/\1/p' "$src/CMakeLists.txt")
deb="$dir/qraft_${version}_$(dpkg --print-architecture).deb"
rm -f "$deb"
(cd "$dir" && cpack -G DEB >/dev/null)
[ -f "$deb" ] || {
    echo "build-deb: cpack made no $deb" >&2
    exit 1
}
echo "$deb"

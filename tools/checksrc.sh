#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# House checks on the C sources (curl's checksrc, in small): functions that
# have no bound are banned, and every file must match .clang-format.
set -u
cd "$(dirname "$0")/.." || exit 1
status=0
files=$(git ls-files 'src/*.c' 'src/**/*.c' 'src/*.h' 'src/**/*.h' \
    'include/*.h' 'include/**/*.h' \
    'tests/*.c' 'tests/**/*.c' 'bench/*.c' 2>/dev/null)
[ -n "$files" ] || exit 0

banned='\<(sprintf|vsprintf|strcpy|strcat|strtok|atoi|atol|gets)[[:space:]]*\('
if grep -nE "$banned" $files; then
	echo "checksrc: banned function (use snprintf, strtonum-style parsing, evbuffer)" >&2
	status=1
fi
if command -v clang-format >/dev/null 2>&1; then
	for f in $files; do
		if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
			echo "checksrc: $f is not clang-formatted (make format)" >&2
			status=1
		fi
	done
fi
exit $status

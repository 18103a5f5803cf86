#!/bin/sh
# SPDX-License-Identifier: Apache-2.0
#
# House checks on the C sources (curl's checksrc, in small): functions that
# have no bound are banned, every file must match .clang-format, and no
# comment cites a document the repository does not hold.
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
# A comment may cite only a document the repository holds: docs/..., or a
# file at the top such as the README; a bare name must exist at the top.
cited=$(git ls-files 'src' 'include' 'tests' 'bench' 'tools' 'config' 2>/dev/null |
    grep -v '/node_modules/' | grep -v '^tests/fixtures/' |
    xargs grep -ohE '(docs/[A-Za-z0-9_/.-]+|\<[A-Z][A-Za-z0-9_]*)\.md\>' 2>/dev/null |
    sort -u)
for doc in $cited; do
	if [ ! -f "$doc" ]; then
		echo "checksrc: a comment cites $doc, which is not in the repository" >&2
		git grep -n -F "$doc" -- src include tests bench tools config | head -3 >&2
		status=1
	fi
done
if command -v clang-format >/dev/null 2>&1; then
	for f in $files; do
		if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
			echo "checksrc: $f is not clang-formatted (make format)" >&2
			status=1
		fi
	done
fi
exit $status

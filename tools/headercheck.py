#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""Each header says which file defines what: its function declarations
stand in sections headed by a comment naming the defining file
("/* session.c */"), and every function declared is defined by an object
built from a file of that name.

    tools/headercheck.py BUILD_DIR

Reads include/tollgate/*.h and the private headers in src/ (*_int.h,
cfg.h), and the symbols each object defines (nm). Prints each
declaration that is outside a section, in the wrong section, or defined
nowhere; exit 1 if there is one, 0 if not, 2 on a usage error.
"""

import os
import re
import subprocess
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import depgraph  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = re.compile(
    r"^/\*\s*(?:src/)?([A-Za-z0-9_/]+\.c)(?:[:,(][^*]*)?\s*\*/\s*$")
PROTO = re.compile(r"\b([A-Za-z_][A-Za-z0-9_]*)\s*\(")


def headers():
    out = []
    inc = os.path.join(ROOT, "include", "tollgate")
    out += [os.path.join(inc, f) for f in sorted(os.listdir(inc))
            if f.endswith(".h")]
    for root, _dirs, files in os.walk(os.path.join(ROOT, "src")):
        for f in sorted(files):
            if f.endswith("_int.h") or f == "cfg.h":
                out.append(os.path.join(root, f))
    return out


def declarations(path):
    """[(line, name, section or None)] of the functions declared at file
    scope (not in struct bodies, macros or function-pointer types)."""
    out, section, depth, stmt, start = [], None, 0, "", 0
    in_comment, test_only = False, 0
    with open(path) as f:
        lines = f.read().split("\n")
    for n, line in enumerate(lines, 1):
        m = SECTION.match(line.strip())
        if m and depth == 0:
            section = os.path.basename(m.group(1))
            continue
        # Strip comments (block comments may span lines).
        text = ""
        i = 0
        while i < len(line):
            if in_comment:
                j = line.find("*/", i)
                if j < 0:
                    i = len(line)
                else:
                    in_comment = False
                    i = j + 2
            elif line.startswith("/*", i):
                in_comment = True
                i += 2
            elif line.startswith("//", i):
                break
            else:
                text += line[i]
                i += 1
        if text.lstrip().startswith("#"):
            # Test hooks are compiled only into the unit tests.
            d = text.split()
            if d[0] in ("#ifdef", "#if") and "TG_UNITTEST" in text:
                test_only += 1
            elif d[0] == "#endif" and test_only:
                test_only -= 1
            continue
        if test_only:
            continue
        for ch in text:
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
        if depth > 0 or not text.strip():
            if depth > 0:
                stmt = ""
            continue
        if not stmt:
            start = n
        stmt += " " + text
        if ";" not in text:
            continue
        s, stmt = stmt.strip(), ""
        if s.startswith(("typedef", "struct", "enum", "union", "extern")) \
                and "(" not in s.split("{")[0]:
            continue
        if s.startswith("typedef") or "(*" in s.split("(")[0] + "(" and \
                re.search(r"\(\s*\*", s.split(")")[0]):
            continue
        m = PROTO.search(s)
        if m and not s.startswith(("}", "return")) and \
                not m.group(1).isupper():
            out.append((start, m.group(1), section))
    return out


def main(argv):
    if len(argv) != 2:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    objs = depgraph.objects(argv[1])
    if not objs:
        print("headercheck: no objects under %s; build first" % argv[1],
              file=sys.stderr)
        return 2
    owner = {}
    for src, obj in objs.items():
        res = subprocess.run(["nm", "-P", "-g", "--defined-only", obj],
                             capture_output=True, text=True, check=True)
        for line in res.stdout.splitlines():
            parts = line.split()
            if len(parts) >= 2 and parts[1] in ("T", "t"):
                owner.setdefault(parts[0], []).append(src)
    bad = 0
    for h in headers():
        rel = os.path.relpath(h, ROOT)
        for n, name, section in declarations(h):
            where = owner.get(name)
            if where is None:
                print("%s:%d: %s is declared but defined nowhere" %
                      (rel, n, name))
                bad += 1
            elif section is None:
                print("%s:%d: %s is outside a /* file.c */ section "
                      "(defined in %s)" % (rel, n, name, where[0]))
                bad += 1
            elif section not in [os.path.basename(w) for w in where]:
                print("%s:%d: %s is in the section of %s but defined in "
                      "%s" % (rel, n, name, section, where[0]))
                bad += 1
    if bad:
        print("headercheck: %d declaration(s) to fix" % bad)
        return 1
    print("headercheck: every declaration is in its defining file's section")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

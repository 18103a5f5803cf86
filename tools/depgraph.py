#!/usr/bin/env python3
# SPDX-License-Identifier: Apache-2.0
"""The object-level dependency graph of src/, from the symbols each object
file defines and uses (nm), folded by folder; fails on a cycle between
folders.

    tools/depgraph.py BUILD_DIR [--files] [--dot]

An object A depends on B when A uses a symbol B defines. Folders are
src/'s subfolders; a .c file directly in src/ is a node of its own (so a
cycle among loose files counts). An edge inside one folder is fine: a
folder is one room. Exit 0 when the folder graph has no cycle, 1 when it
has one (each cycle is printed with the symbols that make its edges), 2 on
a usage error or no objects found.

Each folder also has a README.md saying its one job, naming every source
file in it, and ending its list of what it calls with a line
"Calls: a, b, c." (or "Calls: nothing."); that line must be the folder's
edges in this graph, so a README that no longer tells the truth fails
too (exit 1).
"""

import os
import subprocess
import sys


SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(
    __file__))), "src")


def objects(build):
    """{source path relative to src/: object path} for tollgate's objects
    whose source is still in src/ (a build directory keeps the objects of
    files since moved or removed)."""
    out = {}
    for root, _dirs, files in os.walk(build):
        if "CMakeFiles" not in root:
            continue
        for f in files:
            if not f.endswith(".c.o"):
                continue
            path = os.path.join(root, f)
            rel = path.replace(os.sep, "/")
            i = rel.find("/src/")
            if i < 0 or "/tests/" in rel[:i] or "tollgate" not in rel[:i]:
                continue
            src = rel[i + 5:-2]
            if os.path.exists(os.path.join(SRC, src)):
                out.setdefault(src, path)
    return out


def symbols(obj):
    """(defined, undefined) global symbol sets of one object."""
    res = subprocess.run(["nm", "-P", "-g", obj], capture_output=True,
                         text=True, check=True)
    defined, undefined = set(), set()
    for line in res.stdout.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        name, kind = parts[0], parts[1]
        if kind == "U":
            undefined.add(name)
        elif kind not in ("w", "v"):
            defined.add(name)
    return defined, undefined


def node(src):
    """The folder a source belongs to, or the file itself at the top."""
    head, _sep, _tail = src.partition("/")
    return head if "/" in src else src


def check_readmes(folders, objs):
    """Problems with the folders' README.md files, as strings."""
    problems = []
    for name in sorted({node(s) for s in objs if "/" in s}):
        path = os.path.join(SRC, name, "README.md")
        try:
            with open(path) as f:
                text = f.read()
        except OSError:
            problems.append("src/%s has no README.md saying its job" % name)
            continue
        for root, _dirs, files in os.walk(os.path.join(SRC, name)):
            for f in sorted(files):
                if f.endswith((".c", ".h")) and "`%s`" % f not in text:
                    problems.append("src/%s/README.md does not name %s" %
                                    (name, os.path.relpath(
                                        os.path.join(root, f),
                                        os.path.join(SRC, name))))
        said = None
        for line in text.splitlines():
            if line.startswith("Calls: "):
                said = line[len("Calls: "):].rstrip(".").split(", ")
        actual = sorted(folders.get(name, {}))
        if said is None:
            problems.append("src/%s/README.md has no \"Calls:\" line" %
                            name)
        elif (said == ["nothing"] and actual) or \
                (said != ["nothing"] and sorted(said) != actual):
            problems.append("src/%s/README.md says it calls %s; it calls %s"
                            % (name, ", ".join(said),
                               ", ".join(actual) or "nothing"))
    return problems


def find_cycles(graph):
    """Strongly connected components with more than one node (Tarjan)."""
    index, low, stack, on, comps = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for v in sorted(graph):
        if v not in index:
            visit(v)
    return comps


def main(argv):
    args = [a for a in argv[1:] if not a.startswith("--")]
    flags = {a for a in argv[1:] if a.startswith("--")}
    if len(args) != 1 or flags - {"--files", "--dot"}:
        print(__doc__.strip(), file=sys.stderr)
        return 2
    objs = objects(args[0])
    if not objs:
        print("depgraph: no tollgate objects under %s; build first" %
              args[0], file=sys.stderr)
        return 2
    owner, uses = {}, {}
    for src, obj in sorted(objs.items()):
        defined, undefined = symbols(obj)
        for s in defined:
            owner.setdefault(s, src)
        uses[src] = undefined
    files = {}   # src -> {src: [symbols]}
    for src, und in uses.items():
        for s in sorted(und):
            dst = owner.get(s)
            if dst is not None and dst != src:
                files.setdefault(src, {}).setdefault(dst, []).append(s)
    folders = {}  # node -> {node: [(src, dst, symbol)]}
    for src, dsts in files.items():
        for dst, syms in dsts.items():
            a, b = node(src), node(dst)
            if a != b:
                for s in syms:
                    folders.setdefault(a, {}).setdefault(b, []).append(
                        (src, dst, s))
    if "--dot" in flags:
        print("digraph tollgate {")
        for a in sorted(folders):
            for b in sorted(folders[a]):
                print('  "%s" -> "%s";' % (a, b))
        print("}")
        return 0
    if "--files" in flags:
        for src in sorted(files):
            print("%s -> %s" % (src, ", ".join(sorted(files[src]))))
    cycles = find_cycles({a: set(b) for a, b in folders.items()})
    problems = check_readmes(folders, objs)
    for p in problems:
        print("depgraph: %s" % p)
    if not cycles:
        if problems:
            return 1
        print("depgraph: %d objects, %d folders, no cycle between folders, "
              "every README true" % (len(objs), len({node(s) for s in objs})))
        return 0
    for comp in cycles:
        print("depgraph: cycle between %s:" % ", ".join(comp))
        members = set(comp)
        for a in comp:
            for b in sorted(folders.get(a, {})):
                if b in members:
                    ex = folders[a][b]
                    shown = ", ".join("%s (%s -> %s)" % (s, x, y)
                                      for x, y, s in ex[:3])
                    more = " and %d more" % (len(ex) - 3) if len(ex) > 3 \
                        else ""
                    print("  %s -> %s: %s%s" % (a, b, shown, more))
    return 1


if __name__ == "__main__":
    sys.exit(main(sys.argv))

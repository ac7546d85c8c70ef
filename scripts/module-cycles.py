#!/usr/bin/env python3
"""Lists import cycles between the modules (files) of each crate of the workspace.

A module depends on another when its source names it by path: `use crate::a::b`, an inline
`crate::a::b::f()`, or `super::x`. A path is resolved to the deepest module file it reaches
(`crate::queue::JobSpec` is a dependency on `queue/mod.rs`, which defines or re-exports it).
A parent declaring or re-exporting its children (`mod engine; pub use engine::X;`) is structure,
not a dependency, so it is not counted. Cycles are the strongly connected components of more
than one file.

Usage: python3 scripts/module-cycles.py [crate-dir ...]   (default: every crate of the workspace)
Exits 1 when any crate has a cycle, so it can guard the layering in CI.
"""

import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DEFAULT_CRATES = ["shared", "api", "worker", "bench", "queue"]


def module_files(src):
    """Maps module path tuples to file paths: ('queue', 'engine') -> src/queue/engine.rs."""
    modules = {}
    for directory, _, files in os.walk(src):
        for name in files:
            if not name.endswith(".rs"):
                continue
            path = os.path.join(directory, name)
            relative = os.path.relpath(path, src)[:-3].split(os.sep)
            if relative[-1] == "mod":
                relative = relative[:-1]
            if relative in (["lib"], ["main"]):
                relative = []
            modules[tuple(relative)] = path
    return modules


def strip_comments_and_strings(text):
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    return re.sub(r'"(?:\\.|[^"\\])*"', '""', text)


def use_trees(text):
    """Expands `use a::{b, c::{d, e}};` into ['a::b', 'a::c::d', 'a::c::e']."""
    paths = []
    for match in re.finditer(r"\buse\s+([^;]+);", text):
        paths.extend(expand(match.group(1).replace("\n", " ").replace(" ", "")))
    return paths


def expand(tree):
    brace = tree.find("{")
    if brace < 0:
        return [tree.split(" as ")[0]]
    prefix, inner = tree[:brace], tree[brace + 1 : tree.rfind("}")]
    parts, depth, current = [], 0, ""
    for ch in inner:
        if ch == "," and depth == 0:
            parts.append(current)
            current = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        current += ch
    parts.append(current)
    out = []
    for part in filter(None, parts):
        out.extend(expand(prefix + part))
    return out


def resolve(path, here, modules):
    """The module a path names, as a tuple, or None when it leaves the crate."""
    segments = [s for s in path.split("::") if s]
    if not segments:
        return None
    if segments[0] == "crate":
        base, rest = (), segments[1:]
    elif segments[0] in ("super", "self"):
        base = here
        while segments and segments[0] in ("super", "self"):
            if segments[0] == "super":
                base = base[:-1]
            segments = segments[1:]
        rest = segments
    else:
        return None
    best = base if base in modules else None
    current = base
    for segment in rest:
        current = current + (segment,)
        if current in modules:
            best = current
        else:
            break
    return best


def edges_of(modules):
    edges = {m: set() for m in modules}
    for module, path in modules.items():
        with open(path, encoding="utf-8") as f:
            text = strip_comments_and_strings(f.read())
        paths = use_trees(text)
        paths += re.findall(r"\b(?:crate|super)(?:::\w+)+", text)
        for p in paths:
            target = resolve(p, module, modules)
            if target is None or target == module:
                continue
            # A parent naming its own child (declaring or re-exporting it) is structure.
            if target[: len(module)] == module:
                continue
            edges[module].add(target)
    return edges


def cycles(edges):
    """Strongly connected components (Tarjan) with more than one module."""
    index, low, on_stack, stack, found = {}, {}, set(), [], []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def main():
    crates = sys.argv[1:] or [c for c in DEFAULT_CRATES if os.path.isdir(os.path.join(ROOT, c, "src"))]
    any_cycle = False
    for crate in crates:
        src = os.path.join(ROOT, crate, "src")
        modules = module_files(src)
        found = cycles(edges_of(modules))
        name = lambda m: "::".join(m) or "(root)"
        if not found:
            print(f"{crate}: no cycle among {len(modules)} modules")
            continue
        any_cycle = True
        for component in found:
            print(f"{crate}: cycle of {len(component)} modules: " + ", ".join(name(m) for m in component))
    return 1 if any_cycle else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Import cycles between the files of each crate, and files over a line limit.

A file imports another when it names one of that file's modules through
`crate::…`, `super::…` or `self::…` (in a `use` or in a path). Child modules
declared by a file (`mod x;`) are not imports of that file, but its `pub use`
re-exports are; a path through a re-export counts as an import of the file
that defines the item (followed up to 16 re-exports deep). Test code (`#[cfg(test)]` modules,
`tests/` folders, files named `tests.rs`) is left out, as are `//` comments and
string literals.

Prints every cycle (a strongly connected component of more than one file) and
every production file longer than the limit, and exits 1 if there is any.

    tools/modcycles.py [--max-lines 800] [crates/…]
"""

import argparse
import os
import re
import sys

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def strip(text):
    """Drop comments, string literals and `#[cfg(test)] mod … { … }` blocks."""
    text = re.sub(r"//[^\n]*", "", text)
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    text = re.sub(r'r#*"(?:.|\n)*?"#*', '""', text)
    text = re.sub(r'"(?:\\.|[^"\\])*"', '""', text)
    out = []
    i = 0
    pat = re.compile(r"#\[cfg\(test\)\]\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+" + IDENT + r"\s*\{")
    while True:
        m = pat.search(text, i)
        if not m:
            out.append(text[i:])
            break
        out.append(text[i : m.start()])
        depth = 1
        j = m.end()
        while j < len(text) and depth:
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
            j += 1
        i = j
    return "".join(out)


def modules(src):
    """Map module path (tuple) -> file, for every .rs file under src."""
    mods = {}
    for root, _dirs, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            path = os.path.join(root, f)
            rel = os.path.relpath(path, src)[:-3].split(os.sep)
            if rel[-1] in ("mod", "lib", "main"):
                rel = rel[:-1]
            if "tests" in rel or rel[-1:] == ["tests"]:
                continue
            if rel and rel[0] == "bin":
                continue
            mods[tuple(rel)] = path
    return mods


def resolve(mods, exports, base, parts, depth=0):
    """The module that `base + parts` names: the longest module path it starts
    with, followed through that module's `pub use` re-exports."""
    full = tuple(base) + tuple(parts)
    for n in range(len(full), -1, -1):
        if full[:n] in mods:
            m = full[:n]
            rest = full[n:]
            if rest and depth < 16 and rest[0] in exports.get(m, {}):
                return resolve(mods, exports, (), exports[m][rest[0]] + rest[1:], depth + 1)
            return m
    return None


def absolute(mods, here, parent, path):
    """`path` (a list of segments as written in `here`) as an absolute module
    path, or None when it does not start inside the crate."""
    path = [p.strip() for p in path if p.strip()]
    if not path:
        return None
    head, rest = path[0], path[1:]
    if head == "crate":
        base = []
    elif head == "super":
        base = list(parent)
        while rest and rest[0] == "super":
            base = base[:-1]
            rest = rest[1:]
    elif head == "self":
        base = list(here)
    elif tuple(here) + (head,) in mods:
        base, rest = list(here), path
    else:
        return None
    rest = [r for r in rest if re.fullmatch(IDENT, r) and r != "self"]
    return tuple(base) + tuple(rest)


def reexports(mods, mod, text):
    """Names that `mod` re-exports with `pub use`: name -> absolute path."""
    out = {}
    parent = mod[:-1]
    for m in re.finditer(r"\bpub(?:\([^)]*\))?\s+use\s+([^;]+);", text):
        for path in expand(m.group(1).replace("\n", " ")):
            alias = None
            if path and " as " in path[-1]:
                last, alias = [x.strip() for x in path[-1].split(" as ")]
                path = path[:-1] + [last]
            full = absolute(mods, mod, parent, path)
            if full and len(full) > 0:
                out[alias or full[-1]] = full
    return out


def uses(mods, exports, mod, text):
    """Modules that the file of `mod` imports."""
    found = set()
    parent = mod[:-1]
    paths = []
    for m in re.finditer(r"\buse\s+([^;]+);", text):
        for path in expand(m.group(1).replace("\n", " ")):
            if path and " as " in path[-1]:
                path = path[:-1] + [path[-1].split(" as ")[0]]
            paths.append(path)
    for m in re.finditer(r"\b((?:crate|super|self)(?:::" + IDENT + r")+)", text):
        paths.append(m.group(1).split("::"))
    for path in paths:
        full = absolute(mods, mod, parent, path)
        if full is None:
            continue
        target = resolve(mods, exports, (), full)
        if target is not None:
            found.add(target)
    found.discard(mod)
    return found


def expand(tree):
    """`a::{b, c::{d, e}}` -> [[a, b], [a, c, d], [a, c, e]]."""
    tree = tree.strip()
    m = re.match(r"^(.*?)\{(.*)\}$", tree, flags=re.S)
    if not m:
        tree = re.sub(r"\s+as\s+" + IDENT + "$", "", tree)
        return [[p for p in tree.split("::")]]
    prefix = [p for p in m.group(1).split("::") if p.strip()]
    inner = m.group(2)
    parts, depth, cur = [], 0, ""
    for ch in inner:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append(cur)
            cur = ""
        else:
            cur += ch
    if cur.strip():
        parts.append(cur)
    out = []
    for p in parts:
        for sub in expand(p):
            out.append(prefix + sub)
    return out


def sccs(graph):
    index, low, stack, on, out = {}, {}, [], set(), []
    counter = [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
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
            out.append(comp)

    sys.setrecursionlimit(10000)
    for v in graph:
        if v not in index:
            visit(v)
    return out


def production_lines(path):
    text = open(path, encoding="utf-8").read()
    m = re.search(r"#\[cfg\(test\)\]\s*mod\s+tests\s*\{", text)
    if m:
        text = text[: m.start()]
    return text.count("\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--max-lines", type=int, default=800)
    ap.add_argument("crates", nargs="*")
    args = ap.parse_args()
    crates = args.crates or sorted(
        os.path.join("crates", c) for c in os.listdir("crates") if os.path.isdir(os.path.join("crates", c, "src"))
    )
    bad = 0
    for crate in crates:
        src = os.path.join(crate, "src")
        mods = modules(src)
        graph = {}
        texts = {mod: strip(open(path, encoding="utf-8").read()) for mod, path in mods.items()}
        exports = {mod: reexports(mods, mod, text) for mod, text in texts.items()}
        # A `#[macro_export]` macro sits at the crate root but belongs to the
        # file that defines it.
        for mod, text in texts.items():
            for m in re.finditer(r"#\[macro_export\]\s*macro_rules!\s*(" + IDENT + ")", text):
                exports.setdefault((), {})[m.group(1)] = mod
        for mod, text in texts.items():
            graph[mod] = uses(mods, exports, mod, text)
        files = len(mods)
        cycles = [c for c in sccs(graph) if len(c) > 1]
        long_files = [(p, n) for p in mods.values() if (n := production_lines(p)) > args.max_lines]
        print(f"{crate}: {files} files, {len(cycles)} import cycles, {len(long_files)} files over {args.max_lines} lines")
        for c in cycles:
            names = sorted(os.path.relpath(mods[m], src) for m in c)
            print(f"  cycle ({len(c)} files): {' '.join(names)}")
        for p, n in sorted(long_files):
            print(f"  long: {os.path.relpath(p, src)} ({n} lines)")
        bad += len(cycles) + len(long_files)
    sys.exit(1 if bad else 0)


if __name__ == "__main__":
    main()

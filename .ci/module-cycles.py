#!/usr/bin/env python3
"""Lists circular imports between the modules of each crate in the workspace.

    python3 .ci/module-cycles.py [-v]

A module imports another when it names it in a path: `use crate::a::b::X`,
`super::X`, an inline `crate::a::f()`, `impl crate::Store`. A path to an
item that a module only re-exports (`pub use a::X` in lib.rs) counts as a
path to where it comes from. Test modules (`#[cfg(test)] mod ... { }`),
comments and strings are left out. Prints each crate's module and import
counts and every strongly connected set of modules (a cycle); exits 1 if
there is one. -v lists every import.
"""
import os
import re
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CRATES = [("auditsink-parser", "crates/parser/src", "lib.rs"),
          ("auditsink-storage", "crates/storage/src", "lib.rs"),
          ("auditsink-server", "crates/server/src", "lib.rs"),
          ("auditsink (binary)", "src", "main.rs")]


def strip(text):
    """Comments, strings and char literals out (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            depth, i = 1, i + 2
            while i < n and depth:
                if text.startswith("/*", i):
                    depth, i = depth + 1, i + 2
                elif text.startswith("*/", i):
                    depth, i = depth - 1, i + 2
                else:
                    i += 1
        elif c == "r" and re.match(r'r#*"', text[i:i + 10]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            out.append('""')
            i = n if end < 0 else end + 1 + len(hashes)
        elif c == '"':
            i += 1
            while i < n and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            out.append('""')
            i += 1
        elif c == "'" and re.match(r"'(\\.|[^\\'])'", text[i:i + 4]) or (c == "'" and re.match(r"'\\(x..|u\{[0-9a-fA-F]+\})'", text[i:i + 12])):
            j = text.find("'", i + 2 if text[i + 1] == "\\" else i + 1)
            out.append("' '")
            i = j + 1
        else:
            out.append(c)
            i += 1
    return "".join(out)


def drop_tests(text):
    """`#[cfg(test)]` items (test modules, test-only functions) out."""
    while True:
        m = re.search(r"#\[cfg\(test\)\]\s*", text)
        if not m:
            return text
        i = m.end()
        brace, semi = text.find("{", i), text.find(";", i)
        if semi >= 0 and (brace < 0 or semi < brace):
            text = text[:m.start()] + text[semi + 1:]
            continue
        depth, j = 0, brace
        while j < len(text):
            if text[j] == "{":
                depth += 1
            elif text[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        text = text[:m.start()] + text[j + 1:]


def expand(tree):
    """`a::{b, c::{d, e as f}}` -> [(path, name)]."""
    tree = re.sub(r"\s+", "", tree)
    results = []

    def walk(prefix, t):
        depth, start, parts = 0, 0, []
        for k, ch in enumerate(t):
            if ch == "{":
                depth += 1
            elif ch == "}":
                depth -= 1
            elif ch == "," and depth == 0:
                parts.append(t[start:k])
                start = k + 1
        parts.append(t[start:])
        for part in filter(None, parts):
            if "{" in part:
                head, rest = part.split("{", 1)
                walk(prefix + [s for s in head.split("::") if s], rest[:-1])
            else:
                name = None
                if "as" in part and re.search(r"[a-zA-Z0-9_]as[A-Za-z_]", part) and "::" in part or re.match(r"^\w+as\w+$", part):
                    pass
                segs = [s for s in part.split("::") if s]
                if segs and re.match(r"^(\w+)as(\w+)$", segs[-1]) and not segs[-1].endswith("as"):
                    pass
                results.append((prefix + segs, name))
    walk([], tree)
    return results


def module_files(src, root_file):
    mods = {}
    for dirpath, _, files in os.walk(src):
        for f in files:
            if not f.endswith(".rs"):
                continue
            rel = os.path.relpath(os.path.join(dirpath, f), src)
            if rel == root_file:
                path = ()
            else:
                parts = rel[:-3].split(os.sep)
                if parts[-1] == "mod":
                    parts = parts[:-1]
                path = tuple(parts)
            mods[path] = os.path.join(dirpath, f)
    # keep only modules reachable by `mod` declarations
    declared, stack = {()}, [()]
    while stack:
        m = stack.pop()
        text = strip(open(mods[m]).read())
        for name in re.findall(r"^\s*(?:pub(?:\([^)]*\))?\s+)?mod\s+(\w+)\s*;", text, re.M):
            child = m + (name,)
            if child in mods and child not in declared:
                declared.add(child)
                stack.append(child)
    return {m: p for m, p in mods.items() if m in declared}


def analyse(name, src, root_file, verbose):
    src = os.path.join(ROOT, src)
    mods = module_files(src, root_file)
    texts = {m: drop_tests(strip(open(p).read())) for m, p in mods.items()}
    # each module's `use` imports: name -> absolute path
    uses = {}
    raw_uses = {}
    for m, text in texts.items():
        table, lst = {}, []
        for stmt in re.findall(r"\buse\s+([^;]+);", text):
            for segs, _ in expand(stmt):
                if not segs:
                    continue
                last = segs[-1]
                alias = None
                mm = re.match(r"^(\w+?)as(\w+)$", last)
                if mm and mm.group(1) and (mm.group(1) + "as" + mm.group(2)) == last and mm.group(2)[0].isalpha():
                    # `x as y` collapsed by whitespace removal
                    pass
                absolute = absolutize(m, segs, mods)
                if absolute is None:
                    continue
                if absolute[0] == "<extern>" and segs[0] in table:
                    # a path through a name imported above (`use a::b; use b::X`)
                    absolute = table[segs[0]] + segs[1:]
                alias = segs[-1] if segs[-1] not in ("self", "*") else (segs[-2] if len(segs) > 1 else None)
                if segs[-1] == "self":
                    absolute = absolute[:-1]
                if alias:
                    table[alias] = absolute
                lst.append(absolute)
        uses[m] = table
        raw_uses[m] = lst

    def resolve(path, depth=0):
        """Absolute item path -> the module it comes from."""
        best = ()
        for k in range(len(path), -1, -1):
            if tuple(path[:k]) in mods:
                best = tuple(path[:k])
                break
        rest = path[len(best):]
        if rest and depth < 8 and rest[0] in uses.get(best, {}):
            target = uses[best][rest[0]] + list(rest[1:])
            if target[:1] != ["<extern>"]:
                return resolve(target, depth + 1)
        return best

    edges = {m: {} for m in mods}
    for m, text in texts.items():
        refs = list(raw_uses[m])
        use_spans = [mt.span() for mt in re.finditer(r"\buse\s+[^;]+;", text)]
        for mt in re.finditer(r"\b(crate|super|self)((?:\s*::\s*\w+)+)", text):
            if any(a <= mt.start() < b for a, b in use_spans):
                continue
            segs = [mt.group(1)] + [s.strip() for s in mt.group(2).split("::") if s.strip()]
            absolute = absolutize(m, segs, mods)
            if absolute is not None:
                refs.append(absolute)
        # names a child module's file imports from its parent with `use super::*`-less paths
        for absolute in refs:
            if absolute[:1] == ["<extern>"]:
                continue
            target = resolve(absolute)
            if target != m:
                edges[m].setdefault(target, "::".join(absolute))
    n_edges = sum(len(v) for v in edges.values())
    cycles = sccs(edges)
    print(f"{name}: {len(mods)} modules, {n_edges} imports between them, "
          f"{len(cycles)} cycle(s)")
    fmt = lambda m: "::".join(m) or "(crate root)"
    if verbose:
        for m in sorted(edges):
            for t, via in sorted(edges[m].items()):
                print(f"    {fmt(m)} -> {fmt(t)}   ({via})")
    for comp in cycles:
        print("  cycle: " + ", ".join(fmt(m) for m in sorted(comp)))
        for m in sorted(comp):
            for t, via in sorted(edges[m].items()):
                if t in comp:
                    print(f"    {fmt(m)} -> {fmt(t)}   (via {via})")
    return len(cycles)


def absolutize(m, segs, mods):
    """A path as written in module m -> absolute segments, or None/extern."""
    segs = list(segs)
    if segs[0] == "crate":
        return segs[1:]
    if segs[0] in ("super", "self"):
        base = list(m)
        while segs and segs[0] in ("super", "self"):
            if segs[0] == "super":
                if not base:
                    return None
                base = base[:-1]
            segs = segs[1:]
        return base + segs
    # 2018 uniform paths: a name in scope here (child module, or a name the
    # module imported) else an extern crate
    if tuple(list(m) + [segs[0]]) in mods:
        return list(m) + segs
    return ["<extern>"] + segs


def sccs(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    sys.setrecursionlimit(10000)

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, {}):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(comp)
    for v in list(edges):
        if v not in index:
            visit(v)
    return out


if __name__ == "__main__":
    verbose = "-v" in sys.argv[1:]
    total = sum(analyse(n, s, r, verbose) for n, s, r in CRATES)
    sys.exit(1 if total else 0)

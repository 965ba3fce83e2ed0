#!/usr/bin/env python3
"""Fails when a public symbol declared in Sources/<Module> has no documentation comment.

Reads the symbol graphs that `swift package generate-documentation` extracted (or that
`swift package dump-symbol-graph` writes) and lists every public or open symbol whose
declaration is in this package's Sources and has no doc comment. Members that only
implement a standard protocol requirement (description, ==, hash(into:), makeAsyncIterator…)
are exempt: DocC shows the protocol's documentation for them.

usage: scripts/doc-coverage.py Module [Module…]
"""
import glob, json, os, sys

EXEMPT = {"description", "debugDescription", "customMirror", "hash(into:)", "==(_:_:)", "!=(_:_:)",
          "<(_:_:)", "makeAsyncIterator()", "next()", "unownedExecutor", "Element", "AsyncIterator",
          "init(from:)", "encode(to:)", "errorDescription", "id", "ID", "run()", "localizedDescription",
          "init(stringLiteral:)", "init(integerLiteral:)", "init(arrayLiteral:)", "rawValue", "init(rawValue:)",
          "RawValue", "StringLiteralType", "IntegerLiteralType", "ArrayLiteralElement", "hashValue",
          "Failure", "allCases", "AllCases"}
root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

def graphs(module):
    found = glob.glob(os.path.join(root, ".build", "*", "extracted-symbols", "*", module, f"{module}*.symbols.json"))
    found += glob.glob(os.path.join(root, ".build", "*", "symbolgraph", f"{module}*.symbols.json"))
    return found

missing, total = [], 0
for module in sys.argv[1:]:
    files = graphs(module)
    if not files:
        sys.exit(f"doc-coverage: no symbol graph for {module} (run `make docs` first)")
    seen = set()
    for path in files:
        for symbol in json.load(open(path))["symbols"]:
            if symbol.get("accessLevel") not in ("public", "open"):
                continue
            if symbol["kind"]["identifier"] == "swift.extension":
                continue  # an extension block: its members are checked
            uri = symbol.get("location", {}).get("uri", "")
            if f"/Sources/{module}/" not in uri:
                continue  # inherited, or declared elsewhere
            name = symbol["names"]["title"]
            key = symbol["identifier"]["precise"]
            if key in seen:
                continue
            seen.add(key)
            total += 1
            lines = symbol.get("docComment", {}).get("lines", [])
            if any(line.get("text", "").strip() for line in lines) or name in EXEMPT:
                continue
            file = uri.split("/Sources/", 1)[1]
            line = symbol["location"]["position"]["line"] + 1
            missing.append(f"Sources/{file}:{line}: {'.'.join(symbol['pathComponents'])} has no documentation comment")

for entry in sorted(missing):
    print(entry)
print(f"doc-coverage: {total - len(missing)} of {total} public symbols documented in {', '.join(sys.argv[1:])}")
sys.exit(1 if missing else 0)

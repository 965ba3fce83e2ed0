#!/usr/bin/env python3
"""Fails when a public symbol declared in Sources/<Module> has no summary sentence.

Reads the symbol graphs that `swift package generate-documentation` extracted (or that
`swift package dump-symbol-graph` writes) and lists every public or open symbol whose
declaration is in this package's Sources and whose own doc comment does not begin with
prose: no comment at all, or one whose first non-empty line is a callout (`- Throws:`,
`- Parameter …:`, `- Returns:`…), a list item, a code fence or a heading. A summary is
what DocC shows under the symbol's name in every list; a `- Throws:` line alone leaves
that place empty.

A doc comment the symbol graph copied from a protocol requirement (its `module` is
another module's) is not the symbol's own. The only members excused are those that
implement a requirement of a protocol their type conforms to, recognised from the graph:
the member's name is a requirement of that protocol (for this package's protocols, read
from the graph's `requirementOf` relationships; for the standard ones, REQUIREMENTS
below), and the type (or one of its extensions) has a `conformsTo` relationship to it.
DocC shows the protocol's documentation for those. A member that only shares a name
with a requirement (an `id` on a type that is not `Identifiable`) is not excused.

usage: scripts/doc-coverage.py Module [Module…]
"""
import glob, json, os, re, sys

# Requirements of protocols declared outside this package, by the protocol's name (the
# last component of the graph's `targetFallback`, so `Foundation.LocalizedError` and
# `FoundationEssentials.LocalizedError` are the same).
REQUIREMENTS = {
    "CustomStringConvertible": {"description"},
    "CustomDebugStringConvertible": {"debugDescription"},
    "CustomReflectable": {"customMirror"},
    "LocalizedError": {"errorDescription", "failureReason", "recoverySuggestion", "helpAnchor"},
    "Equatable": {"==(_:_:)", "!=(_:_:)"},
    "Hashable": {"hash(into:)", "hashValue"},
    "Comparable": {"<(_:_:)", "<=(_:_:)", ">(_:_:)", ">=(_:_:)"},
    "Identifiable": {"id", "ID"},
    "RawRepresentable": {"rawValue", "init(rawValue:)", "RawValue"},
    "CaseIterable": {"allCases", "AllCases"},
    "Encodable": {"encode(to:)"},
    "Decodable": {"init(from:)"},
    "ExpressibleByStringLiteral": {"init(stringLiteral:)", "StringLiteralType"},
    "ExpressibleByIntegerLiteral": {"init(integerLiteral:)", "IntegerLiteralType"},
    "ExpressibleByArrayLiteral": {"init(arrayLiteral:)", "ArrayLiteralElement"},
    "Sequence": {"makeIterator()", "Element", "Iterator"},
    "IteratorProtocol": {"next()", "Element"},
    "AsyncSequence": {"makeAsyncIterator()", "Element", "AsyncIterator", "Failure"},
    "AsyncIteratorProtocol": {"next()", "next(isolation:)", "Element", "Failure"},
    "Actor": {"unownedExecutor"},
    "SerialExecutor": {"enqueue(_:)", "asUnownedSerialExecutor()", "checkIsolated()"},
    "Service": {"run()"},
}
# The first line of a comment that is not a summary: a callout (`- Throws:`,
# `- Parameter x:`, `- Returns:`, `- Note:`…) or any other list item, a code fence, a
# heading, a table, a block quote or a directive.
NOT_PROSE = re.compile(r"^([-*+]\s|[-*+]$|```|~~~|#|\||>|@)")

root = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))

def graphs(module):
    found = glob.glob(os.path.join(root, ".build", "*", "extracted-symbols", "*", module, f"{module}*.symbols.json"))
    found += glob.glob(os.path.join(root, ".build", "*", "symbolgraph", f"{module}*.symbols.json"))
    return found

def summary_problem(symbol, module):
    """`None` when the symbol's own comment begins with a summary; else what is wrong."""
    comment = symbol.get("docComment") or {}
    if comment.get("module", module) != module:
        return "has no documentation comment (only the protocol's)"
    lines = [line.get("text", "").strip() for line in comment.get("lines", [])]
    first = next((line for line in lines if line), None)
    if first is None:
        return "has no documentation comment"
    if NOT_PROSE.match(first):
        return f"has no summary sentence (its comment begins with \"{first[:40]}\")"
    return None

missing, total = [], 0
for module in sys.argv[1:]:
    files = graphs(module)
    if not files:
        sys.exit(f"doc-coverage: no symbol graph for {module} (run `make docs` first)")
    symbols, relationships = {}, []
    for path in files:
        graph = json.load(open(path))
        for symbol in graph["symbols"]:
            symbols.setdefault(symbol["identifier"]["precise"], symbol)
        relationships += graph.get("relationships", [])

    def protocol_name(relationship):
        target = symbols.get(relationship["target"])
        if target is not None:
            return target["pathComponents"][-1]
        return relationship.get("targetFallback", relationship["target"]).split(".")[-1]

    parent, extended, conformances, own_requirements = {}, {}, {}, {}
    for relationship in relationships:
        kind, source, target = relationship["kind"], relationship["source"], relationship["target"]
        if kind == "memberOf":
            parent.setdefault(source, target)
        elif kind == "extensionTo":
            extended[source] = target
        elif kind == "conformsTo":
            conformances.setdefault(source, set()).add((target, protocol_name(relationship)))
        elif kind in ("requirementOf", "optionalRequirementOf") and source in symbols:
            own_requirements.setdefault(target, set()).add(symbols[source]["pathComponents"][-1])
    # An extension block's conformances belong to the type it extends.
    for block, type_id in extended.items():
        conformances.setdefault(type_id, set()).update(conformances.get(block, set()))

    def implements_requirement(key, name):
        owner = parent.get(key)
        if owner is None:
            return False
        owner = extended.get(owner, owner)
        for target, protocol in conformances.get(owner, set()):
            requirements = own_requirements.get(target) if target in symbols else REQUIREMENTS.get(protocol)
            if requirements and name in requirements:
                return True
        return False

    for key, symbol in symbols.items():
        if symbol.get("accessLevel") not in ("public", "open"):
            continue
        if symbol["kind"]["identifier"] == "swift.extension":
            continue  # an extension block: its members are checked
        uri = symbol.get("location", {}).get("uri", "")
        if f"/Sources/{module}/" not in uri:
            continue  # inherited, or declared elsewhere
        total += 1
        problem = summary_problem(symbol, module)
        if problem is None or implements_requirement(key, symbol["pathComponents"][-1]):
            continue
        file = uri.split("/Sources/", 1)[1]
        line = symbol["location"]["position"]["line"] + 1
        missing.append(f"Sources/{file}:{line}: {'.'.join(symbol['pathComponents'])} {problem}")

for entry in sorted(missing):
    print(entry)
print(f"doc-coverage: {total - len(missing)} of {total} public symbols have a summary in {', '.join(sys.argv[1:])}")
sys.exit(1 if missing else 0)

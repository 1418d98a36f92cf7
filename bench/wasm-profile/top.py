"""Prints the functions of a V8 .cpuprofile by inclusive and self share."""
import collections
import json
import re
import sys

prof = json.load(open(sys.argv[1]))
nodes = {n["id"]: n for n in prof["nodes"]}
parent = {c: n["id"] for n in prof["nodes"] for c in n.get("children", [])}
samples = collections.Counter(prof["samples"])
total = sum(samples.values()) or 1
incl, own = collections.Counter(), collections.Counter()


def name(i):
    s = nodes[i]["callFrame"]["functionName"] or "(program)"
    return re.sub(r"17h[0-9a-f]{16}E$", "", s)


for nid, c in samples.items():
    own[name(nid)] += c
    seen, x = set(), nid
    while x is not None:
        if name(x) not in seen:
            incl[name(x)] += c
            seen.add(name(x))
        x = parent.get(x)
print("inclusive (llmgate functions):")
for k, v in incl.most_common(200):
    if "llmgate" in k:
        print(f"  {100 * v / total:5.1f}%  {k[:120]}")
print("self:")
for k, v in own.most_common(15):
    print(f"  {100 * v / total:5.1f}%  {k[:120]}")

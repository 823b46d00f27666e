#!/usr/bin/env python3
"""Keeps a small corpus: the N found inputs that add the most coverage edges to the seeds.

libFuzzer's merge keeps every input that adds an edge, hundreds for a JSON target. This reads the control
file of a merge (`-merge=1 -use_counters=0 -merge_control_file=CTL`) and copies into DEST, greedily, the
inputs (not `seed-*`) whose features add the most to those already chosen, until N are chosen or none adds
MIN_GAIN. A merge's "FT" lines hold the features each input added when it ran (inputs run smallest first),
so the gains are a lower bound; measure the result with a second merge into an empty directory.

    select_corpus.py CTL DEST N MIN_GAIN
"""
import os
import shutil
import sys

ctl, dest, cap, min_gain = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
lines = open(ctl).read().split("\n")
n = int(lines[0])
files = lines[2 : 2 + n]
features = {}
for line in lines[2 + n :]:
    if line.startswith("FT "):
        parts = line.split()
        features[int(parts[1])] = set(map(int, parts[2:]))
seed = lambda i: os.path.basename(files[i]).startswith("seed-")
found = [i for i in range(n) if not seed(i) and i in features]
every = set().union(*features.values())
covered = set().union(*(features.get(i, set()) for i in range(n) if seed(i)))
chosen = []
while len(chosen) < cap and found:
    best = max(found, key=lambda i: (len(features[i] - covered), -os.path.getsize(files[i])))
    if len(features[best] - covered) < min_gain:
        break
    chosen.append(best)
    covered |= features[best]
    found.remove(best)
print(f"{len(chosen)} inputs chosen; with the seeds at least {len(covered)} of {len(every)} features")
for i in chosen:
    target = os.path.join(dest, os.path.basename(files[i]))
    if not os.path.exists(target):
        shutil.copy(files[i], target)

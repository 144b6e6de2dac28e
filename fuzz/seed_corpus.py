#!/usr/bin/env python3
"""Write seed inputs for the `read_package` fuzz target from the packages in fixtures/coreml."""
import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(HERE, "..", "fixtures", "coreml")
OUT = os.path.join(HERE, "corpus", "read_package")
os.makedirs(OUT, exist_ok=True)
for name in sorted(os.listdir(FIXTURES)):
    if not name.endswith(".mlpackage"):
        continue
    pkg = os.path.join(FIXTURES, name)
    data = os.path.join(pkg, "Data", "com.apple.CoreML")
    model = open(os.path.join(data, "model.mlmodel"), "rb").read()
    manifest = open(os.path.join(pkg, "Manifest.json"), "rb").read()
    wpath = os.path.join(data, "weights", "weight.bin")
    weights = open(wpath, "rb").read() if os.path.exists(wpath) else b""
    for flags in (0, 1):
        blob = bytes([flags]) + struct.pack("<II", len(model), len(manifest)) + model + manifest + weights
        with open(os.path.join(OUT, "%s-%d" % (name[: -len(".mlpackage")], flags)), "wb") as f:
            f.write(blob)
print("seeded", OUT)

#!/usr/bin/env python3
"""Makes the gzip and IDX fixtures of tests/unit/test_data.cpp.

Run from this folder: python3 make_cases.py (needs the gzip tool; made with
gzip 1.12 and Python's zlib 1.2.13). The uncompressed contents are generated
from formulas that test_data.cpp repeats, so no uncompressed copy is kept.
"""
import os
import struct
import subprocess
import zlib

WORDS = ["vision", "transformer", "patch", "token", "attention", "head", "layer", "norm",
         "the", "a", "of", "and", "image", "class", "cifar", "fashion", "mnist",
         "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]


def payload(n, seed):
    """n bytes of word salad from a 64-bit LCG (test_data.cpp: payload())."""
    x = seed
    out = bytearray()
    while len(out) < n:
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        out += WORDS[(x >> 33) % len(WORDS)].encode()
        out += b"\n" if (x >> 20) % 8 == 0 else b" "
    return bytes(out[:n])


def gzip_tool(data, *flags):
    return subprocess.run(["gzip", "-c", *flags], input=data, capture_output=True,
                          check=True).stdout


def zlib_gzip(parts, level):
    """A gzip stream with a sync flush after each part: the blocks end there."""
    c = zlib.compressobj(level, zlib.DEFLATED, 31)
    out = b""
    for p in parts:
        out += c.compress(p) + c.flush(zlib.Z_SYNC_FLUSH)
    return out + c.flush()


def write(name, data):
    with open(name, "wb") as f:
        f.write(data)


# empty input: one fixed-Huffman block holding only end-of-block.
write("empty.gz", gzip_tool(b"", "-n", "-9"))
# short input: gzip picks a fixed-Huffman block.
write("fixed.gz", gzip_tool(payload(30, 1), "-n", "-9"))
# longer text: dynamic-Huffman blocks.
write("dynamic.gz", gzip_tool(payload(50000, 2), "-n", "-9"))
# level 0: stored blocks, plus the empty stored block each sync flush writes.
d = payload(20000, 3)
write("stored.gz", zlib_gzip([d[:7000], d[7000:]], 0))
# level 6 with a sync flush every 5000 bytes: many blocks, copies across them.
d = payload(30000, 4)
write("multiblock.gz", zlib_gzip([d[i:i + 5000] for i in range(0, len(d), 5000)], 6))
# gzip without -n stores the file name (FNAME) and modification time.
write("named.txt", payload(1000, 5))
os.utime("named.txt", (1700000000, 1700000000))
subprocess.run(["gzip", "-9", "-f", "named.txt"], check=True)  # -> named.txt.gz

# A tiny Fashion-MNIST-style pair: 5 images of 28x28, pixel (i, y, x) =
# (37 i + 28 y + x) mod 256; label i = 3 i mod 10.
n = 5
images = struct.pack(">IIII", 0x00000803, n, 28, 28) + bytes(
    (37 * i + 28 * y + x) % 256 for i in range(n) for y in range(28) for x in range(28))
labels = struct.pack(">II", 0x00000801, n) + bytes(3 * i % 10 for i in range(n))
write("tiny-images-idx3-ubyte.gz", gzip_tool(images, "-n", "-9"))
write("tiny-labels-idx1-ubyte.gz", gzip_tool(labels, "-n", "-1"))

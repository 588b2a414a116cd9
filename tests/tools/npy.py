#!/usr/bin/env python3
"""npy.py -- strict reader/writer for the .npy files our tools exchange.

The C runtime writes logits as .npy (float32, [T, vocab]).  np.load accepts
more than the format allows, so read_npy() checks the file the way the spec
(numpy NEP 1, format versions 1.0-3.0) states it, and says what is wrong:
magic, version, header dict with exactly descr/fortran_order/shape, header
padded with spaces and ending in '\\n' so the data starts 64-byte aligned,
little-endian float32/float64 C-order data, file size equal to header +
data.  write_npy() writes the same format (version 1.0).

    read_npy(path) -> np.ndarray (float64 copy);  write_npy(path, array)
    CLI: npy.py FILE...   prints dtype and shape of each, exit 1 if invalid
"""

import ast
import struct
import sys

import numpy as np

MAGIC = b"\x93NUMPY"
_DESCR = {"<f4": np.float32, "<f8": np.float64}


class NpyError(ValueError):
    pass


def read_npy(path, as_f64=True):
    with open(path, "rb") as f:
        data = f.read()
    if data[:6] != MAGIC:
        raise NpyError("%s: not a .npy file (bad magic)" % path)
    major, minor = data[6], data[7]
    if major == 1:
        hlen, start = struct.unpack("<H", data[8:10])[0], 10
    elif major in (2, 3):
        hlen, start = struct.unpack("<I", data[8:12])[0], 12
    else:
        raise NpyError("%s: unsupported .npy version %d.%d" % (path, major, minor))
    if (start + hlen) % 64:
        raise NpyError("%s: header ends at byte %d, not a multiple of 64" % (path, start + hlen))
    header = data[start:start + hlen].decode("latin1" if major < 3 else "utf-8")
    if not header.endswith("\n"):
        raise NpyError("%s: header does not end with a newline" % path)
    try:
        d = ast.literal_eval(header.strip())
    except (ValueError, SyntaxError) as e:
        raise NpyError("%s: header is not a Python dict literal: %s" % (path, e))
    if not isinstance(d, dict) or set(d) != {"descr", "fortran_order", "shape"}:
        raise NpyError("%s: header keys must be descr, fortran_order, shape; got %r" % (path, d))
    if d["descr"] not in _DESCR:
        raise NpyError("%s: descr %r, expected '<f4' or '<f8'" % (path, d["descr"]))
    if d["fortran_order"] is not False:
        raise NpyError("%s: fortran_order must be False" % path)
    shape = d["shape"]
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise NpyError("%s: bad shape %r" % (path, shape))
    dt = np.dtype(_DESCR[d["descr"]]).newbyteorder("<")
    count = int(np.prod(shape, dtype=np.int64))
    body = len(data) - start - hlen
    if body != count * dt.itemsize:
        raise NpyError("%s: %d data bytes, shape %s of %s needs %d" % (
            path, body, shape, d["descr"], count * dt.itemsize))
    a = np.frombuffer(data, dtype=dt, count=count, offset=start + hlen).reshape(shape)
    return a.astype(np.float64) if as_f64 else a.copy()


def write_npy(path, a):
    a = np.ascontiguousarray(a)
    if a.dtype == np.float32:
        descr = "<f4"
    elif a.dtype == np.float64:
        descr = "<f8"
    else:
        raise NpyError("write_npy: float32 or float64 only, got %s" % a.dtype)
    h = "{'descr': '%s', 'fortran_order': False, 'shape': %r, }" % (descr, tuple(a.shape))
    h += " " * (-(10 + len(h) + 1) % 64) + "\n"
    with open(path, "wb") as f:
        f.write(MAGIC + b"\x01\x00" + struct.pack("<H", len(h)) + h.encode("latin1"))
        f.write(a.astype(a.dtype.newbyteorder("<"), copy=False).tobytes())


def main(argv):
    bad = 0
    for p in argv:
        try:
            a = read_npy(p, as_f64=False)
            print("%s: %s %s" % (p, a.dtype, list(a.shape)))
        except (OSError, NpyError) as e:
            print("%s" % e, file=sys.stderr)
            bad = 1
    return bad


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

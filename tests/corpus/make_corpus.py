#!/usr/bin/env python3
"""Writes vgrad's corpus of bad input files, and the manifest the corpus test reads.

Each file is damaged on purpose (truncated, wrong magic, lying headers, deep JSON,
gzip bombs, FIFOs...). tests/corpus/test_corpus.cpp loads every one and expects a
vgrad::Error naming the file and containing the manifest's fragment. Standard
library only (CI has Debian's python3 and no PyTorch).

    make_corpus.py OUT_DIR [--seeds SEED_DIR]

--seeds also writes small valid files: the fuzzers' starting corpus.
"""
import gzip
import json
import os
import struct
import sys
import zlib

MB = 1 << 20


class Corpus:
    def __init__(self, out):
        self.out = out
        self.rows = []  # (name, kind, fragment, named file)
        os.makedirs(out, exist_ok=True)

    def path(self, name):
        return os.path.join(self.out, name)

    def add(self, name, kind, fragment, data=None, named=None):
        """Records `name` (writing `data` to it when given): loading it as `kind`
        must raise a vgrad::Error containing `fragment` and the path of `named`."""
        if data is not None:
            full = self.path(name)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            with open(full, "wb") as f:
                f.write(data)
        self.rows.append((name, kind, fragment, named or name))

    def write_manifest(self):
        with open(self.path("manifest.tsv"), "w") as f:
            f.write("# name\tkind\texpected fragment\tfile the message must name\n")
            for row in self.rows:
                assert all("\t" not in part and "\n" not in part for part in row), row
                f.write("\t".join(row) + "\n")


# ---------------- safetensors ----------------

def st_file(header, data=b"", declared=None):
    """8-byte little-endian length, the header text as given, then the data."""
    if isinstance(header, (dict, list)):
        header = json.dumps(header)
    if isinstance(header, str):
        header = header.encode("utf-8", "surrogateescape")
    length = len(header) if declared is None else declared
    return struct.pack("<Q", length) + header + data


def tensor(dtype="F32", shape=(1,), offsets=(0, 4)):
    return {"dtype": dtype, "shape": list(shape), "data_offsets": list(offsets)}


def entry_json(dtype='"F32"', shape="[1]", offsets="[0,4]"):
    return '{"dtype":%s,"shape":%s,"data_offsets":%s}' % (dtype, shape, offsets)


def valid_safetensors():
    w = struct.pack("<6f", 1, -2, 3.5, 0, 1e-30, -7.25)
    b = struct.pack("<3d", 0.5, 1.5, -2.5)
    header = {"__metadata__": {"format": "pt"}, "b": tensor("F64", (3,), (0, 24)), "w": tensor("F32", (2, 3), (24, 48))}
    return st_file(header, b + w)


def safetensors_cases(c):
    add = lambda name, fragment, data, **kw: c.add("st/" + name, "safetensors", fragment, data, **kw)
    four = b"\0" * 4
    add("empty.safetensors", "file too short: 0 bytes", b"")
    add("five-bytes.safetensors", "file too short: 5 bytes", b"\1\0\0\0\0")
    add("length-past-end.safetensors", "header length 1000 runs past the end", st_file("{}", declared=1000))
    add("length-max.safetensors", "runs past the end of the file", st_file("{}", declared=(1 << 64) - 1))
    add("length-one-past.safetensors", "runs past the end of the file", st_file("{}", declared=3))
    # Wrong magic: other formats read as a length field.
    add("png.safetensors", "runs past the end of the file", b"\x89PNG\r\n\x1a\n" + b"\0" * 64)
    add("zip.safetensors", "runs past the end of the file", b"PK\x03\x04" + b"\x14" * 60)
    add("gzip.safetensors", "", gzip.compress(valid_safetensors(), mtime=0))
    add("idx.safetensors", "runs past the end of the file", b"\0\0\x08\x03\0\0\0\1\0\0\0\2\0\0\0\2" + b"\1" * 4)
    add("pickle.safetensors", "runs past the end of the file", b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01u." * 2)
    # Headers of 100 MB and more: sparse files, so the corpus stays small on disk.
    for name, size, fragment in [("header-100mb.safetensors", 100_000_008, "exceeds the 100000000-byte limit"),
                                 ("header-1gb.safetensors", 1 << 30, "exceeds the 100000000-byte limit")]:
        add(name, fragment, None)
        with open(c.path("st/" + name), "wb") as f:
            f.write(struct.pack("<Q", size))
            f.truncate(8 + size)
    add("header-99mb-of-nul.safetensors", "header is not valid JSON", None)
    with open(c.path("st/header-99mb-of-nul.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", 99_000_000))
        f.truncate(8 + 99_000_000)
    # JSON that is not JSON, or not an object.
    add("json-cut.safetensors", "header is not valid JSON", st_file('{"a": {"dtype": "F32",'))
    add("json-trailing.safetensors", "header is not valid JSON", st_file('{} {}'))
    add("json-nul.safetensors", "header is not valid JSON", st_file('{"a"\0:1}'))
    add("json-bad-utf8.safetensors", "header is not valid JSON", st_file(b'{"\xff\xfe":1}'))
    add("json-empty.safetensors", "header is not valid JSON", st_file(""))
    add("json-array.safetensors", "header must be a JSON object, got array", st_file("[1, 2]"))
    add("json-null.safetensors", "header must be a JSON object, got null", st_file("null"))
    add("json-string.safetensors", "header must be a JSON object, got string", st_file('"x"'))
    add("json-number.safetensors", "header must be a JSON object, got number", st_file("1"))
    # Deep nesting: used to overflow the stack (SIGSEGV) while printing the value.
    deep = 100_000
    add("deep-shape.safetensors", "nested deeper than",
        st_file(entry_json(shape="[" * deep + "1" + "]" * deep).join(['{"x":', "}"]), four))
    add("deep-metadata.safetensors", "nested deeper than",
        st_file('{"__metadata__":{"k":' + "[" * deep + "]" * deep + "}}"))
    add("deep-objects.safetensors", "nested deeper than", st_file('{"a":' * deep + "1" + "}" * deep))
    add("deep-dtype.safetensors", "nested deeper than", st_file('{"x":' + entry_json(dtype="[" * 40 + "]" * 40) + "}", four))
    add("deep-unclosed.safetensors", "nested deeper than", st_file('{"x":' + "[" * 1_000_000))
    # Numbers nlohmann cannot hold: used to escape as a raw out_of_range exception.
    add("shape-1e999.safetensors", "tensor 'x': header is not valid JSON", st_file('{"x":' + entry_json(shape="[1e999]") + "}", four))
    add("shape-minus-1e999.safetensors", "tensor 'x'", st_file('{"x":' + entry_json(shape="[-1e999]") + "}", four))
    add("offsets-1e999.safetensors", "tensor 'x'", st_file('{"x":' + entry_json(offsets="[0,1e999]") + "}", four))
    add("shape-10k-digits.safetensors", "tensor 'x'", st_file('{"x":' + entry_json(shape="[" + "9" * 10_000 + "]") + "}", four))
    add("metadata-1e999.safetensors", "__metadata__", st_file('{"__metadata__":{"k":1e999}}'))
    # Fields missing or of the wrong type.
    add("missing-dtype.safetensors", "tensor 'x': missing field 'dtype'", st_file({"x": {"shape": [1], "data_offsets": [0, 4]}}, four))
    add("missing-shape.safetensors", "tensor 'x': missing field 'shape'", st_file({"x": {"dtype": "F32", "data_offsets": [0, 4]}}, four))
    add("missing-offsets.safetensors", "tensor 'x': missing field 'data_offsets'", st_file({"x": {"dtype": "F32", "shape": [1]}}, four))
    add("entry-array.safetensors", "tensor 'x': entry must be an object", st_file({"x": [1]}, four))
    add("entry-huge-string.safetensors", "tensor 'x': entry must be an object", st_file({"x": "a" * MB}, four))
    add("dtype-number.safetensors", "tensor 'x': dtype must be a string", st_file({"x": tensor(4)}, four))
    add("shape-string.safetensors", "tensor 'x': shape must be an array", st_file({"x": {"dtype": "F32", "shape": "12", "data_offsets": [0, 4]}}, four))
    add("shape-negative.safetensors", "shape must be a non-negative integer, got -1", st_file({"x": tensor(shape=(-1,))}, four))
    add("shape-float.safetensors", "shape must be a non-negative integer, got 1.5", st_file({"x": tensor(shape=(1.5,))}, four))
    add("shape-nested.safetensors", "shape must be a non-negative integer", st_file({"x": tensor(shape=([1],))}, four))
    add("shape-2p63.safetensors", "shape must be a non-negative integer", st_file({"x": tensor(shape=(1 << 63,))}, four))
    add("shape-overflow.safetensors", "overflows a 64-bit byte count", st_file({"x": tensor(shape=(1 << 32, 1 << 32, 1 << 32))}, four))
    add("shape-million-dims.safetensors", "dims)] overflows", st_file({"x": tensor(shape=(2,) * 1_000_000)}, four))
    add("offsets-three.safetensors", "data_offsets must be [begin, end]", st_file({"x": tensor(offsets=(0, 4, 8))}, four))
    add("offsets-strings.safetensors", "data_offsets must be a non-negative integer", st_file({"x": tensor(offsets=("0", "4"))}, four))
    add("offsets-negative.safetensors", "data_offsets must be a non-negative integer", st_file({"x": tensor(offsets=(-4, 0))}, four))
    add("offsets-2p64.safetensors", "data_offsets must be a non-negative integer", st_file({"x": tensor(offsets=(0, (1 << 64) - 1))}, four))
    add("offsets-reversed.safetensors", "data_offsets [8, 4] out of range", st_file({"x": tensor(shape=(0,), offsets=(8, 4))}, b"\0" * 8))
    add("offsets-past-end.safetensors", "data_offsets [0, 16] out of range", st_file({"x": tensor(shape=(4,), offsets=(0, 16))}, b"\0" * 8))
    # Bad dtypes.
    for name, dtype in [("f99", "F99"), ("lowercase", "f32"), ("empty", ""), ("f4", "F4"), ("long", "F" * 100_000)]:
        add("dtype-%s.safetensors" % name, "unknown or unsupported dtype", st_file({"x": tensor(dtype)}, four))
    # Data buffer layout lies.
    add("size-mismatch.safetensors", "needs 12 bytes, but data_offsets [0, 8] span 8", st_file({"x": tensor(shape=(3,), offsets=(0, 8))}, b"\0" * 8))
    add("overlap.safetensors", "overlapping tensor 'a'",
        st_file({"a": tensor(shape=(2,), offsets=(0, 8)), "b": tensor(shape=(2,), offsets=(4, 12))}, b"\0" * 12))
    add("alias.safetensors", "overlapping tensor 'a'",
        st_file({"a": tensor(shape=(2,), offsets=(0, 8)), "b": tensor(shape=(2,), offsets=(0, 8))}, b"\0" * 8))
    add("gap.safetensors", "gap in the data buffer",
        st_file({"a": tensor(offsets=(0, 4)), "b": tensor(offsets=(8, 12))}, b"\0" * 12))
    add("uncovered-tail.safetensors", "4 bytes belong to no tensor", st_file({"a": tensor()}, b"\0" * 8))
    add("hidden-data.safetensors", "belong to no tensor", st_file({}, b"\0" * 3))
    add("metadata-not-object.safetensors", "__metadata__ must be an object of strings", st_file({"__metadata__": "x"}))
    add("metadata-number.safetensors", "__metadata__ entry 'n' must be a string, got 1", st_file({"__metadata__": {"n": 1}}))
    add("metadata-huge-array.safetensors", "characters)", st_file({"__metadata__": {"n": ["a" * 1000] * 1000}}))
    # Truncated copies of a valid file.
    good = valid_safetensors()
    add("cut-last-byte.safetensors", "out of range", good[:-1])
    add("cut-half.safetensors", "", good[: len(good) // 2])
    add("cut-in-length.safetensors", "file too short", good[:7])
    add("cut-in-header.safetensors", "runs past the end of the file", good[:20])
    # A valid file whose dtype vgrad's Tensor cannot hold: refused by the checkpoint loader.
    c.add("st/u8-tensor.safetensors", "checkpoint", "which vgrad does not load", st_file({"x": tensor("U8", (4,), (0, 4))}, four))
    # Not regular files: a FIFO used to block forever; a directory; a link to a device.
    os.makedirs(c.path("st/directory.safetensors"), exist_ok=True)
    add("directory.safetensors", "not a regular file (a directory)", None)
    make_fifo(c.path("st/fifo.safetensors"))
    add("fifo.safetensors", "not a regular file (a FIFO)", None)
    make_symlink("/dev/zero", c.path("st/dev-zero.safetensors"))
    add("dev-zero.safetensors", "not a regular file (a character device)", None)
    add("missing.safetensors", "cannot open", None)


# ---------------- IDX ----------------

def idx_file(dims, data=b"", type_code=0x08):
    return bytes([0, 0, type_code, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims) + data


def gz(data):
    return gzip.compress(data, compresslevel=9, mtime=0)


def gzip_bomb(declared_dims):
    """An honest gzip bomb: a header for product(dims) bytes followed by that many
    zeros, as concatenated gzip members (zlib reads them as one stream). 2 GB of
    data costs ~2 MB on disk and no time to make."""
    total = 1
    for d in declared_dims:
        total *= d
    chunk = 64 * MB
    zeros_member = gzip.compress(b"\0" * chunk, compresslevel=9, mtime=0)
    header = idx_file(declared_dims)
    out = [gzip.compress(header, mtime=0)]
    full, rest = divmod(total, chunk)
    out += [zeros_member] * full
    if rest:
        out.append(gzip.compress(b"\0" * rest, compresslevel=9, mtime=0))
    return b"".join(out)


def idx_cases(c):
    add = lambda name, fragment, data, kind="idx": c.add("idx/" + name, kind, fragment, data)
    add("empty-idx", "truncated header: expected 4 bytes, got 0", b"")
    add("three-bytes-idx", "truncated header: expected 4 bytes, got 3", b"\0\0\x08")
    add("png-idx", "the first two bytes of an IDX file must be zero", b"\x89PNG\r\n\x1a\n" + b"\0" * 16)
    add("safetensors-as-idx", "the first two bytes of an IDX file must be zero", valid_safetensors())
    add("images-as-labels-idx1-ubyte.gz", "bad magic 0x00000803 (expected 0x00000801)", gz(idx_file([1, 2, 2], b"\1" * 4)), "idx-labels")
    add("labels-as-images-idx3-ubyte.gz", "bad magic 0x00000801 (expected 0x00000803)", gz(idx_file([2], b"\1\2")), "idx-images")
    for code in (0x09, 0x0B, 0x0C, 0x0D, 0x0E, 0x00, 0xFF):
        add("type-%02x-idx" % code, "unsupported IDX type", idx_file([2], b"\0" * 64, code))
    for ndims in (0, 5, 255):
        add("ndims-%d-idx" % ndims, "bad number of dimensions %d" % ndims, bytes([0, 0, 8, ndims]) + b"\0" * 64)
    add("cut-dims-idx", "truncated header: expected 12 bytes of dimensions, got 6", idx_file([3, 2, 2])[:10])
    add("cut-data-idx", "truncated: expected 12 data bytes, got 5", idx_file([3, 2, 2], b"\1" * 5))
    add("cut-data-idx.gz", "truncated: expected 12 data bytes, got 5", gz(idx_file([3, 2, 2], b"\1" * 5)))
    add("trailing-idx", "3 trailing bytes", idx_file([2], b"\1\2" + b"xyz"))
    add("two-files-idx.gz", "trailing bytes", gz(idx_file([2], b"\1\2")) * 2)
    add("overflow-idx", "dimensions overflow a 64-bit element count", idx_file([0xFFFFFFFF] * 4, b"\1"))
    add("declares-1tb-idx", "over the limit of 1073741824", idx_file([0xFFFF, 0xFFFF, 0xFFFF], b"\1" * 16))
    add("declares-2gb-idx.gz", "over the limit of 1073741824", gz(idx_file([1, 46341, 46341], b"\0" * MB)))
    add("gzip-bomb-2gb-idx3-ubyte.gz", "header declares 2 x 32768 x 32768 = 2147483648 data bytes", gzip_bomb([2, 32768, 32768]), "idx-images")
    good = gz(idx_file([3, 2, 2], bytes(range(12))))
    crc_broken = bytearray(good)
    crc_broken[-8] ^= 0xFF
    add("bad-crc-idx.gz", "incorrect data check", bytes(crc_broken))
    add("cut-gz-idx.gz", "unexpected end of file", good[:-10])
    add("gz-magic-only-idx.gz", "", b"\x1f\x8b")
    add("gz-garbage-idx.gz", "", b"\x1f\x8b\x08\x00" + b"\xff" * 60)
    add("gz-of-gz-idx.gz", "the first two bytes of an IDX file must be zero", gz(good))
    os.makedirs(c.path("idx/directory-idx"), exist_ok=True)
    add("directory-idx", "not a regular file (a directory)", None)
    make_fifo(c.path("idx/fifo-idx.gz"))
    add("fifo-idx.gz", "not a regular file (a FIFO)", None)
    add("missing-idx.gz", "cannot open", None)


def write_split(c, directory, prefix, rows, cols, labels, images=None):
    count = len(labels) if images is None else images
    base = c.path(os.path.join(directory, prefix))
    os.makedirs(os.path.dirname(base), exist_ok=True)
    with open(base + "-images-idx3-ubyte.gz", "wb") as f:
        f.write(gz(idx_file([count, rows, cols], bytes(count * rows * cols))))
    with open(base + "-labels-idx1-ubyte.gz", "wb") as f:
        f.write(gz(idx_file([len(labels)], bytes(labels))))


def mnist_cases(c):
    # Each case is a directory in MNIST's layout; the manifest names the file the
    # error must name.
    write_split(c, "mnist/label-200", "t10k", 28, 28, [1, 9, 0, 3, 4, 5, 6, 200, 2])
    c.add("mnist/label-200", "mnist-test", "label 200 of record 7 out of range for 10 classes",
          named="mnist/label-200/t10k-labels-idx1-ubyte.gz")
    write_split(c, "mnist/label-10", "train", 2, 2, [0, 10])
    c.add("mnist/label-10", "mnist-train", "label 10 of record 1 out of range", named="mnist/label-10/train-labels-idx1-ubyte.gz")
    write_split(c, "mnist/empty-test", "t10k", 28, 28, [])
    c.add("mnist/empty-test", "mnist-test", "holds no images", named="mnist/empty-test/t10k-images-idx3-ubyte.gz")
    write_split(c, "mnist/zero-rows", "train", 0, 28, [1, 2])
    c.add("mnist/zero-rows", "mnist-train", "pixels hold nothing", named="mnist/zero-rows/train-images-idx3-ubyte.gz")
    write_split(c, "mnist/size-mismatch", "train", 27, 28, [1, 2])
    write_split(c, "mnist/size-mismatch", "t10k", 28, 28, [3])
    c.add("mnist/size-mismatch", "mnist-train", "holds 27x28 images but", named="mnist/size-mismatch/t10k-images-idx3-ubyte.gz")
    c.add("mnist/size-mismatch", "mnist-test", "holds 28x28 images but", named="mnist/size-mismatch/train-images-idx3-ubyte.gz")
    write_split(c, "mnist/count-mismatch", "train", 2, 2, [1, 2, 3], images=4)
    c.add("mnist/count-mismatch", "mnist-train", "has 4 images but", named="mnist/count-mismatch/train-labels-idx1-ubyte.gz")
    write_split(c, "mnist/no-labels", "train", 2, 2, [1])
    os.remove(c.path("mnist/no-labels/train-labels-idx1-ubyte.gz"))
    c.add("mnist/no-labels", "mnist-train", "looked for", named="mnist/no-labels/train-labels-idx1-ubyte.gz")


def make_fifo(path):
    if os.path.lexists(path):
        os.remove(path)
    os.mkfifo(path)


def make_symlink(target, path):
    if os.path.lexists(path):
        os.remove(path)
    os.symlink(target, path)


def write_seeds(seed_dir):
    os.makedirs(os.path.join(seed_dir, "safetensors"), exist_ok=True)
    os.makedirs(os.path.join(seed_dir, "idx"), exist_ok=True)
    seeds = {
        "safetensors/valid": valid_safetensors(),
        "safetensors/empty": st_file("{}        "),
        "safetensors/metadata": st_file({"__metadata__": {"a": "b"}, "x": tensor("I64", (1,), (0, 8))}, b"\0" * 8),
        "idx/labels": idx_file([3], b"\1\2\3"),
        "idx/images.gz": gz(idx_file([2, 2, 3], bytes(range(12)))),
        "idx/four-dims": idx_file([1, 2, 1, 2], b"\5" * 4),
    }
    for name, data in seeds.items():
        with open(os.path.join(seed_dir, name), "wb") as f:
            f.write(data)


def main(argv):
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--seeds"):
        sys.exit(__doc__)
    corpus = Corpus(argv[1])
    safetensors_cases(corpus)
    idx_cases(corpus)
    mnist_cases(corpus)
    corpus.write_manifest()
    if len(argv) == 4:
        write_seeds(argv[3])
    print("corpus: %d bad inputs in %s" % (len(corpus.rows), argv[1]))


if __name__ == "__main__":
    main(sys.argv)

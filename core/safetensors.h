// The safetensors file format at the raw byte level: named (dtype, shape,
// bytes) entries plus string metadata, saved atomically and loaded with full
// validation. It does not know Tensor; the checkpoint code converts to and from it.
// Spec: 8-byte LE header length N, N bytes of JSON, then the data buffer.
#pragma once

#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

namespace vgrad::safetensors {

// One tensor. `dtype` is a safetensors name ("F32", "F64", "I64", "F16",
// "BF16", "I32", "U8", "BOOL", ...); `bytes` holds numel * dtype_size bytes,
// row-major and little-endian (the host order on every platform vgrad targets).
struct Entry {
  std::string dtype;
  std::vector<int64_t> shape;  // empty = scalar (one element)
  std::vector<uint8_t> bytes;
};

// A whole file. std::map keeps names sorted, so iteration order is stable and
// does not depend on the order the writer used.
struct File {
  std::map<std::string, Entry> tensors;
  std::map<std::string, std::string> metadata;  // the "__metadata__" object
};

// Bytes per element of a safetensors dtype name, or 0 if the name is unknown
// (or a sub-byte type such as F4, which this reader does not support).
int64_t dtype_size(std::string_view dtype);

// Writes `tensors` and `metadata` to `path` atomically: everything is validated
// first (a bad entry throws before any file is touched), then written to
// "<path>.tmp.<pid>", flushed and fsync'ed, and renamed over `path`. On any
// failure (a vgrad::Error) the temp file is removed and the previous `path` is
// left intact. The temp name is per process: two threads must not save the
// same path at once. A save killed outright (kill -9) leaves its temp file; the
// next save of the same path removes every "<path>.tmp.<pid>" whose process is
// gone (a live process's is never touched), so they cannot pile up.
// Data is laid out by descending dtype size, then name, so every tensor is
// aligned to its element size (the header is padded with spaces to 8 bytes).
void save(const std::string& path, const std::map<std::string, Entry>& tensors,
          const std::map<std::string, std::string>& metadata = {});

// Reads and validates `path`: not a regular file (a FIFO, directory or device is
// refused by type before it is read, so a FIFO cannot hang us), file too short,
// header length past the end of the file or over 100 MB, invalid JSON (numbers
// such as 1e999 included), JSON nested over 32 levels, missing or mistyped
// fields, unknown dtype, byte size
// != numel * dtype size, offsets out of range, overlapping, leaving gaps, or not
// covering the whole data buffer. Errors are vgrad::Error (a std::runtime_error)
// and name the file and the tensor; they quote at most an excerpt of a value.
File load(const std::string& path);

}  // namespace vgrad::safetensors

// safetensors save/load over plain stdio and POSIX fsync/rename. Strict on
// read (every byte of the data buffer must belong to exactly one tensor);
// not a zero-copy or memory-mapped reader.
#include "core/safetensors.h"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <limits>
#include <new>
#include <nlohmann/json.hpp>
#include <optional>
#include <set>
#include <stdexcept>
#include <sys/stat.h>
#include <tuple>
#include <vector>

#include "core/error.h"
#include "core/regular_file.h"
#include "core/shape.h"

namespace vgrad::safetensors {
namespace {

// The reference implementation refuses larger headers; a corrupt length
// field must not make us allocate gigabytes before the JSON check fails.
constexpr uint64_t kMaxHeaderBytes = 100'000'000;
constexpr const char* kMetadataKey = "__metadata__";
// Real headers nest three levels (header, tensor, shape). nlohmann prints and
// destroys values recursively, so a 100,000-deep value would overflow the stack:
// nesting is refused while parsing, long before that.
constexpr int kMaxJsonDepth = 32;

[[noreturn]] void throw_error(const std::string& path, const std::string& why) {
  throw Error("safetensors: " + path + ": " + why);
}

// Where in the header a problem was found: "tensor 'x': " or "__metadata__: ".
std::string location(const std::string& key) {
  return key == kMetadataKey ? key + ": " : "tensor '" + truncated(key) + "': ";
}

[[noreturn]] void throw_tensor_error(const std::string& path, const std::string& name, const std::string& why) {
  throw_error(path, location(name) + why);
}

std::string shape_text(const std::vector<int64_t>& shape) {
  std::string text = "[";
  size_t i = 0;
  for (; i < shape.size() && text.size() <= kMaxQuotedChars; ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  if (i < shape.size()) text += ", ... (" + std::to_string(shape.size()) + " dims)";
  return text + "]";
}

// numel * element size, or throws naming the tensor when it overflows int64.
int64_t byte_count(const std::string& path, const std::string& name, const std::vector<int64_t>& shape,
                   int64_t element_size) {
  int64_t count = element_size;
  for (int64_t dim : shape) {
    if (dim < 0) throw_tensor_error(path, name, "negative dimension in shape " + shape_text(shape));
    if (__builtin_mul_overflow(count, dim, &count)) {
      throw_tensor_error(path, name, "shape " + shape_text(shape) + " overflows a 64-bit byte count");
    }
  }
  // With a zero dim the count is 0, but strides are still products of the other dims.
  if (!contiguous_strides_fit(shape))
    throw_tensor_error(path, name, "shape " + shape_text(shape) + " has strides that overflow int64");
  return count;
}

std::string errno_text() { return std::strerror(errno); }

// A value as JSON for an error message: a header can be 100 MB, a message must not.
std::string excerpt(const nlohmann::json& value) {
  return truncated(value.dump(-1, ' ', true, nlohmann::json::error_handler_t::replace));
}

struct TooDeep {};
struct RepeatedKey {
  std::string key;
};

// Parses the header, refusing nesting past kMaxJsonDepth and a key repeated within one object
// (a tensor named twice, a dtype given twice: nlohmann keeps the last silently) as it goes. Every
// nlohmann error (bad syntax, a number such as 1e999 that overflows) becomes a
// vgrad::Error naming the top-level key (the tensor) being read when it happened.
nlohmann::json parse_header(const std::string& path, const std::string& text) {
  using Event = nlohmann::json::parse_event_t;
  std::optional<std::string> key;  // the top-level key being parsed, once there is one
  const auto where = [&] { return key ? location(*key) : std::string(); };
  std::vector<std::set<std::string>> keys_of_open_objects;
  const auto watch = [&](int depth, Event event, nlohmann::json& parsed) {
    if (event == Event::key && depth == 1) key = parsed.get<std::string>();
    if ((event == Event::object_start || event == Event::array_start) && depth >= kMaxJsonDepth) throw TooDeep{};
    if (event == Event::object_start) keys_of_open_objects.emplace_back();
    if (event == Event::object_end) keys_of_open_objects.pop_back();
    if (event == Event::key && !keys_of_open_objects.back().insert(parsed.get<std::string>()).second)
      throw RepeatedKey{parsed.get<std::string>()};
    return true;
  };
  try {
    return nlohmann::json::parse(text, watch);
  } catch (const TooDeep&) {
    throw_error(path, where() + "header is nested deeper than " + std::to_string(kMaxJsonDepth) + " levels");
  } catch (const RepeatedKey& repeated) {
    throw_error(path, where() + "header names '" + truncated(repeated.key, 64) + "' twice in one object");
  } catch (const nlohmann::json::exception& error) {
    throw_error(path, where() + "header is not valid JSON: " + truncated(error.what(), 200));
  }
}

// Removes "<path>.tmp.<pid>" files left by saves that were killed (kill -9, a
// crash, a power cut): only those whose process is gone, so a save running in
// another live process is never disturbed. A reused pid only delays the cleanup.
// NOTE: pids are per host; on a filesystem shared between hosts a temporary of
// another host's live process could be taken for stale. Best effort: a
// failure here never fails the save.
void remove_stale_temporaries(const std::string& path) {
  namespace fs = std::filesystem;
  fs::path target(path);
  const fs::path dir = target.parent_path().empty() ? fs::path(".") : target.parent_path();
  const std::string prefix = target.filename().string() + ".tmp.";
  std::error_code ec;
  for (fs::directory_iterator it(dir, ec), end; !ec && it != end; it.increment(ec)) {
    const std::string name = it->path().filename().string();
    if (name.size() <= prefix.size() || name.compare(0, prefix.size(), prefix) != 0) continue;
    const std::string digits = name.substr(prefix.size());
    if (digits.size() > 9 || !std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; }))
      continue;
    const pid_t pid = static_cast<pid_t>(std::stol(digits));
    if (pid <= 0 || pid == ::getpid()) continue;
    if (::kill(pid, 0) == 0 || errno != ESRCH) continue;  // alive (or not ours to signal): keep it
    std::error_code remove_error;
    fs::remove(it->path(), remove_error);
  }
}

// The temp file of one save(): removed on destruction unless committed, so
// every early exit (exception included) cleans up after itself.
class TempFile {
 public:
  explicit TempFile(std::string path) : path_(std::move(path)) {}
  ~TempFile() {
    if (file_ != nullptr) std::fclose(file_);
    if (!committed_) std::remove(path_.c_str());
  }
  TempFile(const TempFile&) = delete;
  TempFile& operator=(const TempFile&) = delete;

  const std::string& path() const { return path_; }
  FILE*& file() { return file_; }
  void commit() { committed_ = true; }

 private:
  std::string path_;
  FILE* file_ = nullptr;
  bool committed_ = false;
};

// fsync the directory so the rename itself survives a crash. Best effort: some
// filesystems refuse fsync on directories and the data is already safe.
void sync_directory_of(const std::string& path) {
  std::filesystem::path dir = std::filesystem::path(path).parent_path();
  if (dir.empty()) dir = ".";
  const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0) return;
  ::fsync(fd);
  ::close(fd);
}

// Owns a FILE* for load().
struct InputFile {
  FILE* file = nullptr;
  ~InputFile() {
    if (file != nullptr) std::fclose(file);
  }
};

uint64_t read_u64_le(const uint8_t* bytes) {
  uint64_t value = 0;
  for (int i = 7; i >= 0; --i) value = (value << 8) | bytes[i];
  return value;
}

uint64_t get_unsigned(const std::string& path, const std::string& name, const nlohmann::json& value, const char* what) {
  if (!value.is_number_unsigned() || value.get<uint64_t>() > uint64_t(std::numeric_limits<int64_t>::max())) {
    throw_tensor_error(path, name, std::string(what) + " must be a non-negative integer, got " + excerpt(value));
  }
  return value.get<uint64_t>();
}

struct Span {
  const std::string* name;
  int64_t begin;
  int64_t end;
};

}  // namespace

int64_t dtype_size(std::string_view dtype) {
  static const std::map<std::string_view, int64_t> sizes = {
      {"BOOL", 1}, {"U8", 1},  {"I8", 1},  {"F8_E5M2", 1}, {"F8_E4M3", 1}, {"F8_E8M0", 1},
      {"I16", 2},  {"U16", 2}, {"F16", 2}, {"BF16", 2},    {"I32", 4},     {"U32", 4},
      {"F32", 4},  {"I64", 8}, {"U64", 8}, {"F64", 8},     {"C64", 8},
  };
  const auto it = sizes.find(dtype);
  return it == sizes.end() ? 0 : it->second;
}

void save(const std::string& path, const std::map<std::string, Entry>& tensors,
          const std::map<std::string, std::string>& metadata) {
  // 1. Validate everything before touching the filesystem.
  std::vector<std::pair<const std::string*, const Entry*>> order;
  order.reserve(tensors.size());
  for (const auto& [name, entry] : tensors) {
    if (name.empty()) throw_error(path, "tensor with an empty name");
    if (name == kMetadataKey)
      throw_error(path, std::string("'") + kMetadataKey + "' is reserved and cannot name a tensor");
    const int64_t element_size = dtype_size(entry.dtype);
    if (element_size == 0) throw_tensor_error(path, name, "unknown dtype '" + entry.dtype + "'");
    const int64_t expected = byte_count(path, name, entry.shape, element_size);
    if (static_cast<int64_t>(entry.bytes.size()) != expected) {
      throw_tensor_error(path, name,
                         "dtype " + entry.dtype + " with shape " + shape_text(entry.shape) + " needs " +
                             std::to_string(expected) + " bytes, got " + std::to_string(entry.bytes.size()));
    }
    order.emplace_back(&name, &entry);
  }
  // Largest elements first: with the data buffer starting 8-byte aligned, every
  // tensor then starts at a multiple of its own element size.
  std::stable_sort(order.begin(), order.end(), [](const auto& a, const auto& b) {
    return dtype_size(a.second->dtype) > dtype_size(b.second->dtype);
  });

  // 2. Build the header. ordered_json keeps __metadata__ first and tensors in
  // data order, which makes a hexdump of the file easy to read.
  nlohmann::ordered_json header = nlohmann::ordered_json::object();
  if (!metadata.empty()) header[kMetadataKey] = metadata;
  int64_t offset = 0;
  for (const auto& [name, entry] : order) {
    const int64_t end = offset + static_cast<int64_t>(entry->bytes.size());
    header[*name] = {{"dtype", entry->dtype}, {"shape", entry->shape}, {"data_offsets", {offset, end}}};
    offset = end;
  }
  std::string header_text;
  try {
    header_text = header.dump();
  } catch (const nlohmann::json::exception& error) {  // e.g. a name that is not valid UTF-8
    throw_error(path, std::string("cannot encode header: ") + error.what());
  }
  header_text.append((8 - header_text.size() % 8) % 8, ' ');
  uint8_t length_bytes[8];
  for (int i = 0; i < 8; ++i) length_bytes[i] = static_cast<uint8_t>(uint64_t(header_text.size()) >> (8 * i));

  // 3. Write a temp file beside the target (same filesystem, so rename is atomic),
  // first clearing what killed saves of this target left behind, so they cannot pile up.
  remove_stale_temporaries(path);
  TempFile temp(path + ".tmp." + std::to_string(::getpid()));
  temp.file() = std::fopen(temp.path().c_str(), "wb");
  if (temp.file() == nullptr) throw_error(path, "cannot create " + temp.path() + ": " + errno_text());
  const auto write = [&](const void* data, size_t size) {
    if (size != 0 && std::fwrite(data, 1, size, temp.file()) != size) {
      throw_error(path, "write to " + temp.path() + " failed: " + errno_text());
    }
  };
  write(length_bytes, sizeof length_bytes);
  write(header_text.data(), header_text.size());
  for (const auto& [name, entry] : order) write(entry->bytes.data(), entry->bytes.size());
  if (std::fflush(temp.file()) != 0) throw_error(path, "flush of " + temp.path() + " failed: " + errno_text());
  if (::fsync(::fileno(temp.file())) != 0) throw_error(path, "fsync of " + temp.path() + " failed: " + errno_text());
  const int close_result = std::fclose(temp.file());
  temp.file() = nullptr;
  if (close_result != 0) throw_error(path, "close of " + temp.path() + " failed: " + errno_text());

  // 4. Publish. Until this rename succeeds the previous file is untouched.
  if (std::rename(temp.path().c_str(), path.c_str()) != 0) {
    throw_error(path, "cannot rename " + temp.path() + " over it: " + errno_text());
  }
  temp.commit();
  sync_directory_of(path);
}

File load(const std::string& path) {
  InputFile input;
  const int fd = open_regular_file(path, "safetensors");
  input.file = ::fdopen(fd, "rb");
  if (input.file == nullptr) {
    ::close(fd);
    throw_error(path, "cannot open: " + errno_text());
  }
  struct stat info {};
  if (::fstat(::fileno(input.file), &info) != 0) throw_error(path, "cannot stat: " + errno_text());
  const uint64_t file_size = static_cast<uint64_t>(info.st_size);

  if (file_size < 8) {
    throw_error(path, "file too short: " + std::to_string(file_size) +
                          " bytes (a safetensors file starts with an 8-byte header length)");
  }
  uint8_t length_bytes[8];
  if (std::fread(length_bytes, 1, 8, input.file) != 8) throw_error(path, "read error: " + errno_text());
  const uint64_t header_size = read_u64_le(length_bytes);
  if (header_size > file_size - 8) {
    throw_error(path, "header length " + std::to_string(header_size) + " runs past the end of the file (" +
                          std::to_string(file_size) + " bytes)");
  }
  if (header_size > kMaxHeaderBytes) {
    throw_error(path, "header length " + std::to_string(header_size) + " exceeds the " +
                          std::to_string(kMaxHeaderBytes) + "-byte limit");
  }
  std::string header_text(header_size, '\0');
  if (header_size != 0 && std::fread(header_text.data(), 1, header_size, input.file) != header_size) {
    throw_error(path, "read error in header: " + errno_text());
  }
  const int64_t buffer_size = static_cast<int64_t>(file_size - 8 - header_size);

  const nlohmann::json header = parse_header(path, header_text);
  if (!header.is_object()) throw_error(path, "header must be a JSON object, got " + std::string(header.type_name()));

  File result;
  std::vector<Span> spans;
  for (const auto& [name, value] : header.items()) try {
    if (name == kMetadataKey) {
      if (!value.is_object()) throw_error(path, std::string(kMetadataKey) + " must be an object of strings");
      for (const auto& [key, text] : value.items()) {
        if (!text.is_string()) {
          throw_error(path, std::string(kMetadataKey) + " entry '" + truncated(key) + "' must be a string, got " + excerpt(text));
        }
        result.metadata[key] = text.get<std::string>();
      }
      continue;
    }
    if (!value.is_object()) throw_tensor_error(path, name, "entry must be an object, got " + excerpt(value));
    for (const char* field : {"dtype", "shape", "data_offsets"}) {
      if (!value.contains(field)) throw_tensor_error(path, name, std::string("missing field '") + field + "'");
    }
    const auto& dtype = value["dtype"];
    const auto& shape = value["shape"];
    const auto& offsets = value["data_offsets"];
    if (!dtype.is_string()) throw_tensor_error(path, name, "dtype must be a string, got " + excerpt(dtype));
    if (!shape.is_array()) throw_tensor_error(path, name, "shape must be an array, got " + excerpt(shape));
    if (!offsets.is_array() || offsets.size() != 2) {
      throw_tensor_error(path, name, "data_offsets must be [begin, end], got " + excerpt(offsets));
    }

    Entry entry;
    entry.dtype = dtype.get<std::string>();
    const int64_t element_size = dtype_size(entry.dtype);
    if (element_size == 0) throw_tensor_error(path, name, "unknown or unsupported dtype '" + truncated(entry.dtype) + "'");
    for (const auto& dim : shape) entry.shape.push_back(static_cast<int64_t>(get_unsigned(path, name, dim, "shape")));
    const auto begin = static_cast<int64_t>(get_unsigned(path, name, offsets[0], "data_offsets"));
    const auto end = static_cast<int64_t>(get_unsigned(path, name, offsets[1], "data_offsets"));
    if (end < begin || end > buffer_size) {
      throw_tensor_error(path, name,
                         "data_offsets [" + std::to_string(begin) + ", " + std::to_string(end) +
                             "] out of range (the data buffer has " + std::to_string(buffer_size) + " bytes)");
    }
    const int64_t expected = byte_count(path, name, entry.shape, element_size);
    if (end - begin != expected) {
      throw_tensor_error(path, name,
                         "dtype " + entry.dtype + " with shape " + shape_text(entry.shape) + " needs " +
                             std::to_string(expected) + " bytes, but data_offsets [" + std::to_string(begin) + ", " +
                             std::to_string(end) + "] span " + std::to_string(end - begin));
    }
    auto [it, inserted] = result.tensors.emplace(name, std::move(entry));
    spans.push_back({&it->first, begin, end});
  } catch (const nlohmann::json::exception& error) {  // any access above that nlohmann refuses
    throw_error(path, location(name) + truncated(error.what(), 200));
  }

  // The tensors must tile the buffer exactly: no overlap (two names aliasing
  // bytes), no gaps and no uncovered tail (hidden data the header does not describe).
  std::sort(spans.begin(), spans.end(),
            [](const Span& a, const Span& b) { return std::tie(a.begin, a.end) < std::tie(b.begin, b.end); });
  int64_t cursor = 0;
  const std::string* previous = nullptr;
  for (const Span& span : spans) {
    if (span.begin < cursor) {
      throw_tensor_error(path, *span.name,
                         "data_offsets start at " + std::to_string(span.begin) + ", overlapping tensor '" + *previous +
                             "' which ends at " + std::to_string(cursor));
    }
    if (span.begin > cursor) {
      throw_tensor_error(path, *span.name,
                         "gap in the data buffer: bytes [" + std::to_string(cursor) + ", " +
                             std::to_string(span.begin) + ") belong to no tensor");
    }
    cursor = span.end;
    previous = span.name;
  }
  if (cursor != buffer_size) {
    throw_error(path, "data buffer has " + std::to_string(buffer_size) + " bytes but the tensors cover only " +
                          std::to_string(cursor) + " (" + std::to_string(buffer_size - cursor) +
                          " bytes belong to no tensor)");
  }

  // Spans are contiguous from 0, so a sequential read fills every tensor.
  for (const Span& span : spans) {
    Entry& entry = result.tensors.at(*span.name);
    try {
      entry.bytes.resize(static_cast<size_t>(span.end - span.begin));
    } catch (const std::bad_alloc&) {
      throw_tensor_error(path, *span.name,
                         "cannot allocate " + std::to_string(span.end - span.begin) + " bytes for its data");
    }
    if (!entry.bytes.empty() &&
        std::fread(entry.bytes.data(), 1, entry.bytes.size(), input.file) != entry.bytes.size()) {
      throw_tensor_error(path, *span.name, "read error: " + errno_text());
    }
  }
  return result;
}

}  // namespace vgrad::safetensors

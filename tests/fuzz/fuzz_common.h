// What the two libFuzzer harnesses share: the fuzz input as a file (the readers
// take paths) held in memory, and the rule that only vgrad::Error may escape.
//
// Build (clang and libFuzzer: on Debian `apt-get install clang libclang-rt-14-dev`):
//   cmake -S tests/fuzz -B build-fuzz -DCMAKE_CXX_COMPILER=clang++ && cmake --build build-fuzz -j2
//   python3 tests/corpus/make_corpus.py /tmp/vgrad-corpus --seeds fuzz-seeds   # valid starting files
// Long run, one at a time (one core each; findings land in ./crash-*, ./oom-*, ./timeout-*):
//   mkdir -p fuzz-corpus/safetensors fuzz-corpus/idx
//   build-fuzz/fuzz_safetensors -jobs=1 -max_total_time=3600 -timeout=10 -rss_limit_mb=2048 \
//       fuzz-corpus/safetensors fuzz-seeds/safetensors
//   build-fuzz/fuzz_idx -jobs=1 -max_total_time=3600 -timeout=10 -rss_limit_mb=2048 fuzz-corpus/idx fuzz-seeds/idx
// A finding replays with `build-fuzz/fuzz_safetensors crash-<hash>`. CI runs each for 60 s (.ci/run).
#pragma once
#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdlib>
#include <string>

// One in-memory file (memfd) rewritten per input: no disk traffic, and a
// regular file as far as stat() is concerned, so the readers accept its path.
class InputAsFile {
 public:
  InputAsFile() : fd_(::memfd_create("vgrad-fuzz-input", 0)) {
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(const uint8_t* data, size_t size) {
    if (::ftruncate(fd_, 0) != 0) std::abort();
    for (size_t done = 0; done < size;) {
      const ssize_t wrote = ::pwrite(fd_, data + done, size - done, static_cast<off_t>(done));
      if (wrote <= 0) std::abort();
      done += static_cast<size_t>(wrote);
    }
    return path_;
  }

 private:
  int fd_;
  std::string path_;
};

// libFuzzer harness for safetensors::load: any bytes must load or be refused
// with a vgrad::Error. A crash, a sanitizer report, any other exception, a hang
// or a large allocation is a finding. A file that loads must also survive
// save and load again unchanged. Build and run: fuzz_common.h.
#include <filesystem>
#include <string>

#include "core/error.h"
#include "core/safetensors.h"
#include "fuzz_common.h"

namespace st = vgrad::safetensors;

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  static InputAsFile input;
  static const std::string resaved =
      (std::filesystem::temp_directory_path() / ("vgrad-fuzz-" + std::to_string(::getpid()) + ".safetensors")).string();
  st::File file;
  try {
    file = st::load(input.write(data, size));
  } catch (const vgrad::Error&) {
    return 0;
  }
  try {
    st::save(resaved, file.tensors, file.metadata);
  } catch (const vgrad::Error&) {
    return 0;  // e.g. a name save refuses (""), or a full disk
  }
  const st::File again = st::load(resaved);
  if (again.metadata != file.metadata || again.tensors.size() != file.tensors.size()) std::abort();
  for (const auto& [name, entry] : file.tensors) {
    const st::Entry& other = again.tensors.at(name);
    if (other.dtype != entry.dtype || other.shape != entry.shape || other.bytes != entry.bytes) std::abort();
  }
  return 0;
}

// Conversion between Tensors and safetensors entries, and the save/load pairs.
#include "nn/checkpoint.h"

#include <cstring>
#include <new>

#include "core/error.h"
#include "core/safetensors.h"

namespace vgrad::nn {

void save_tensors(const std::string& path, const std::map<std::string, Tensor>& tensors,
                  const std::map<std::string, std::string>& metadata) {
  std::map<std::string, safetensors::Entry> entries;
  for (const auto& [name, t] : tensors) {
    const Tensor host = t.detach().to(kCPU).contiguous();
    safetensors::Entry entry{dtype_safetensors(t.dtype()), t.shape(), {}};
    entry.bytes.resize(static_cast<size_t>(host.numel()) * dtype_size(t.dtype()));
    if (!entry.bytes.empty()) std::memcpy(entry.bytes.data(), host.data_ptr(), entry.bytes.size());
    entries.emplace(name, std::move(entry));
  }
  safetensors::save(path, entries, metadata);
}

std::map<std::string, Tensor> load_tensors(const std::string& path) { return tensors_of(safetensors::load(path), path); }

std::map<std::string, Tensor> tensors_of(const safetensors::File& file, const std::string& path) {
  std::map<std::string, Tensor> out;
  for (const auto& [name, entry] : file.tensors) {
    DType dtype;
    if (!dtype_from_safetensors(entry.dtype.c_str(), dtype)) {
      std::string known;
      for (const DTypeInfo& info : kDTypes) known += (known.empty() ? "" : ", ") + std::string(info.safetensors);
      fail("checkpoint: {}: tensor '{}' has dtype {}, which vgrad does not load ({})", path, name, entry.dtype, known);
    }
    Tensor t;
    try {
      t = Tensor::empty(entry.shape, dtype);
    } catch (const std::bad_alloc&) {
      fail("checkpoint: {}: tensor '{}' ({} bytes): cannot allocate memory for it", path, truncated(name),
           entry.bytes.size());
    }
    if (!entry.bytes.empty()) std::memcpy(t.data_ptr(), entry.bytes.data(), entry.bytes.size());
    out.emplace(name, t);
  }
  return out;
}

void save(const Module& module, const std::string& path) {
  save_tensors(path, module.state_dict(), {{"format", "pt"}, {"producer", "vgrad"}});
}

void load(Module& module, const std::string& path) {
  const auto tensors = load_tensors(path);
  try {
    module.load_state_dict(tensors, true);
  } catch (const Error& e) {
    fail("checkpoint: {}: {}", path, e.what());
  }
}

}  // namespace vgrad::nn

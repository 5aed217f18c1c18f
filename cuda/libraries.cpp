// Opening the CUDA libraries (cuda/libraries.h says why at run time) and binding their tables.
// CMake gives each library's configure-time folder (VGRAD_*_LIBRARY_DIR) as the fallback.
#include "cuda/libraries.h"

#include <dlfcn.h>

#include <utility>

#include "core/error.h"

#define VGRAD_STRINGIFY_EXPANDED(text) #text
// The text after macro expansion: VGRAD_STRINGIFY(cublasCreate) is "cublasCreate_v2".
#define VGRAD_STRINGIFY(text) VGRAD_STRINGIFY_EXPANDED(text)
#define VGRAD_CUDA_BIND_FUNCTION(member, function) library.bind(table.member, VGRAD_STRINGIFY(function));

namespace vgrad::cuda {

SharedLibrary::SharedLibrary(std::string soname, const std::string& fallback_dir, const std::string& what)
    : soname_(std::move(soname)) {
  handle_ = dlopen(soname_.c_str(), RTLD_NOW | RTLD_LOCAL);
  if (handle_ != nullptr) return;
  const std::string searched_error = dlerror();
  std::string searched = "the library path";
  if (!fallback_dir.empty()) {
    const std::string fallback = fallback_dir + "/" + soname_;
    handle_ = dlopen(fallback.c_str(), RTLD_NOW | RTLD_LOCAL);
    if (handle_ != nullptr) return;
    searched += " and " + fallback_dir;
  }
  fail("CUDA backend: cannot load {} (searched {}): {}; install {} or put its folder on LD_LIBRARY_PATH", soname_,
       searched, searched_error, what);
}

void* SharedLibrary::address(const char* symbol) const {
  (void)dlerror();  // clear a stale error, so the message below is this lookup's
  void* address = dlsym(handle_, symbol);
  if (address == nullptr) {
    const char* error = dlerror();
    fail("CUDA backend: {} has no symbol {} ({}): it is older than the headers vgrad was built with", soname_, symbol,
         error != nullptr ? error : "null address");
  }
  return address;
}

// The C declarations that Cublas's written-out members stand for: a static_cast picks the
// overload of exactly that type, and does not compile if the header changes it.
static_assert(sizeof(static_cast<decltype(Cublas::gemm_ex)>(&cublasGemmEx)) > 0);
static_assert(sizeof(static_cast<decltype(Cublas::gemm_strided_batched_ex)>(&cublasGemmStridedBatchedEx)) > 0);

namespace {
// A library's table, bound by `bind_all(library, table)`.
template <class Table, class BindAll>
Table load(const char* soname, const char* fallback_dir, const char* what, BindAll bind_all) {
  const SharedLibrary library(soname, fallback_dir, what);
  Table table;
  bind_all(library, table);
  return table;
}
}  // namespace

const Cublas& cublas() {
  static const Cublas loaded =
      load<Cublas>("libcublas.so." VGRAD_STRINGIFY(CUBLAS_VER_MAJOR), VGRAD_CUDA_LIBRARY_DIR,
                   "the CUDA toolkit's cuBLAS", [](const SharedLibrary& library, Cublas& table) {
                     VGRAD_CUBLAS_FUNCTIONS(VGRAD_CUDA_BIND_FUNCTION)
                     library.bind(table.gemm_ex, "cublasGemmEx");
                     library.bind(table.gemm_strided_batched_ex, "cublasGemmStridedBatchedEx");
                   });
  return loaded;
}

// cuBLASLt has no version macro of its own: it ships with cuBLAS, under cuBLAS's major version.
const CublasLt& cublas_lt() {
  static const CublasLt loaded = load<CublasLt>(
      "libcublasLt.so." VGRAD_STRINGIFY(CUBLAS_VER_MAJOR), VGRAD_CUDA_LIBRARY_DIR, "the CUDA toolkit's cuBLASLt",
      [](const SharedLibrary& library, CublasLt& table) { VGRAD_CUBLASLT_FUNCTIONS(VGRAD_CUDA_BIND_FUNCTION) });
  return loaded;
}

const Curand& curand() {
  static const Curand loaded = load<Curand>(
      "libcurand.so." VGRAD_STRINGIFY(CURAND_VER_MAJOR), VGRAD_CUDA_LIBRARY_DIR, "the CUDA toolkit's cuRAND",
      [](const SharedLibrary& library, Curand& table) { VGRAD_CURAND_FUNCTIONS(VGRAD_CUDA_BIND_FUNCTION) });
  return loaded;
}

#if VGRAD_WITH_CUDNN
const Cudnn& cudnn() {
  static const Cudnn loaded =
      load<Cudnn>("libcudnn.so." VGRAD_STRINGIFY(CUDNN_MAJOR), VGRAD_CUDNN_LIBRARY_DIR,
                  "cuDNN " VGRAD_STRINGIFY(CUDNN_MAJOR) " (or set VGRAD_CUDNN=0)",
                  [](const SharedLibrary& library, Cudnn& table) { VGRAD_CUDNN_FUNCTIONS(VGRAD_CUDA_BIND_FUNCTION) });
  return loaded;
}
#endif

#if VGRAD_WITH_NCCL
const Nccl& nccl() {
  static const Nccl loaded =
      load<Nccl>("libnccl.so." VGRAD_STRINGIFY(NCCL_MAJOR), VGRAD_NCCL_LIBRARY_DIR, "NCCL " VGRAD_STRINGIFY(NCCL_MAJOR),
                 [](const SharedLibrary& library, Nccl& table) { VGRAD_NCCL_FUNCTIONS(VGRAD_CUDA_BIND_FUNCTION) });
  return loaded;
}
#endif

}  // namespace vgrad::cuda

// Tests of cuda/libraries.{h,cpp}: the CUDA libraries are opened at their first use, not
// when a program starts. No GPU needed (dlopen and dlsym need only the libraries' files,
// which a CUDA build's toolkit has): every symbol of every library this build uses binds;
// a missing library or symbol is an error naming it and the fix; the configure-time
// folder is searched when the library path has no copy; and a CPU training step maps no
// CUDA library, until the first call into cuBLAS does. A CPU-only build has nothing to test.
#include <gtest/gtest.h>

#if VGRAD_WITH_CUDA
#include <dlfcn.h>
#include <unistd.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <string>
#include <string_view>

#include "core/error.h"
#include "cuda/libraries.h"
#include "support.h"
#include "vgrad.h"

namespace {

using namespace vgrad;

#define EXPECT_BOUND(member, function) EXPECT_NE(table.member, nullptr) << #function;

TEST(CudaLibraries, BindsEverySymbolOfEveryLibraryThisBuildUses) {
  {
    const cuda::Cublas& table = cuda::cublas();
    VGRAD_CUBLAS_FUNCTIONS(EXPECT_BOUND)
    EXPECT_BOUND(gemm_ex, cublasGemmEx)
    EXPECT_BOUND(gemm_strided_batched_ex, cublasGemmStridedBatchedEx)
    // A bound function runs (no GPU needed): the status names come from cuBLAS itself.
    EXPECT_STREQ(table.get_status_name(CUBLAS_STATUS_NOT_INITIALIZED), "CUBLAS_STATUS_NOT_INITIALIZED");
  }
  {
    const cuda::CublasLt& table = cuda::cublas_lt();
    VGRAD_CUBLASLT_FUNCTIONS(EXPECT_BOUND)
  }
  {
    const cuda::Curand& table = cuda::curand();
    VGRAD_CURAND_FUNCTIONS(EXPECT_BOUND)
  }
#if VGRAD_WITH_CUDNN
  {
    const cuda::Cudnn& table = cuda::cudnn();
    VGRAD_CUDNN_FUNCTIONS(EXPECT_BOUND)
    EXPECT_STREQ(table.get_error_string(CUDNN_STATUS_BAD_PARAM), "CUDNN_STATUS_BAD_PARAM");
  }
#endif
#if VGRAD_WITH_NCCL
  {
    const cuda::Nccl& table = cuda::nccl();
    VGRAD_NCCL_FUNCTIONS(EXPECT_BOUND)
    EXPECT_STRNE(table.get_error_string(ncclInvalidArgument), "");
  }
#endif
}

// The message of the vgrad::Error that `action` throws ("" if none).
template <class Action> std::string error_of(Action action) {
  try {
    action();
  } catch (const Error& error) {
    return error.what();
  }
  return "";
}

TEST(CudaLibraries, MissingLibraryNamesItWhereItWasSoughtAndWhatToInstall) {
  const std::string message = error_of(
      [] { cuda::SharedLibrary("libvgrad_no_such_library.so.7", "/nonexistent/lib64", "the test's library"); });
  EXPECT_NE(message.find("CUDA backend: cannot load libvgrad_no_such_library.so.7 (searched the library path and "
                         "/nonexistent/lib64): libvgrad_no_such_library.so.7: cannot open shared object file"),
            std::string::npos)
      << message;
  EXPECT_NE(message.find("; install the test's library or put its folder on LD_LIBRARY_PATH"), std::string::npos)
      << message;
}

TEST(CudaLibraries, MissingSymbolNamesTheLibraryAndTheSymbol) {
  const cuda::SharedLibrary libm("libm.so.6", "", "libm");
  EXPECT_NE(libm.address("cos"), nullptr);
  const std::string message = error_of([&] { (void)libm.address("cublasNoSuchFunction_v2"); });
  EXPECT_NE(message.find("CUDA backend: libm.so.6 has no symbol cublasNoSuchFunction_v2 ("), std::string::npos)
      << message;
  EXPECT_NE(message.find("undefined symbol"), std::string::npos) << message;  // dlerror's own words
}

// A name the library path does not know, present only in the fallback folder: found there.
TEST(CudaLibraries, SearchesTheConfiguredFolderWhenTheLibraryPathHasNone) {
  Dl_info info{};
  ASSERT_NE(dladdr(reinterpret_cast<void*>(static_cast<double (*)(double)>(&std::cos)), &info), 0);
  const std::filesystem::path folder =
      std::filesystem::temp_directory_path() / ("vgrad_libraries_" + std::to_string(getpid()));
  std::filesystem::create_directories(folder);
  std::filesystem::create_symlink(info.dli_fname, folder / "libvgrad_fallback_test.so.1");
  const std::string soname = "libvgrad_fallback_test.so.1";
  EXPECT_NE(error_of([&] { cuda::SharedLibrary(soname, "", "x"); }), "");  // not on the library path
  const cuda::SharedLibrary found(soname, folder.string(), "x");
  EXPECT_NE(found.address("cos"), nullptr);
  std::filesystem::remove_all(folder);
}

// The CUDA libraries among this process's mappings, e.g. " libcublas.so.13 libcublasLt.so.13".
std::string mapped_cuda_libraries() {
  std::ifstream maps("/proc/self/maps");
  std::string line, found;
  for (const std::string_view name :
       {"/libcublas.so", "/libcublasLt.so", "/libcurand.so", "/libcudnn", "/libnccl.so", "/libcudart.so"}) {
    maps.clear();
    maps.seekg(0);
    while (std::getline(maps, line)) {
      const size_t at = line.find(name);
      if (at == std::string::npos) continue;
      found.append(" ").append(line, at + 1);  // the file name (line's end)
      break;
    }
  }
  return found;
}

// One CPU training step, with the device query every program makes, then the first cuBLAS
// call; reports the CUDA libraries mapped after each and exits 0 if none was mapped before
// cuBLAS and libcublas was after.
[[noreturn]] void train_on_cpu_then_call_cublas() {
  (void)cuda::is_available();
  manual_seed(1);
  vgrad_test::Mlp model{6, 10, 3};
  optim::SGD sgd(model.parameters(), {.lr = 0.1});
  const Tensor x = randn({8, 6});
  const Tensor y = affine(rand({8}), 3.0, 0.0).to(DType::Int64);
  nn::cross_entropy(model(x), y).backward();
  sgd.step();
  const std::string after_step = mapped_cuda_libraries();
  (void)cuda::cublas();
  const std::string after_cublas = mapped_cuda_libraries();
  std::fprintf(stderr, "after a CPU step:%s\nafter cublas():%s\n", after_step.empty() ? " none" : after_step.c_str(),
               after_cublas.c_str());
  std::exit(after_step.empty() && after_cublas.find("libcublas.so") != std::string::npos ? 0 : 1);
}

// In a fresh process: the "threadsafe" death-test style re-runs this test alone, so no
// earlier test of this binary has loaded a library yet.
TEST(CudaLibraries, CpuTrainingMapsNoCudaLibraryUntilTheFirstCublasCall) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  EXPECT_EXIT(train_on_cpu_then_call_cublas(), testing::ExitedWithCode(0),
              "after a CPU step: none\nafter cublas\\(\\):.* libcublas.so.[0-9]+");
}

}  // namespace
#endif

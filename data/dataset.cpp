// TensorDataset, Mnist and transforms.
#include "data/dataset.h"

#include <algorithm>
#include <cmath>

#include "core/grad_mode.h"
#include "core/error.h"
#include "data/idx.h"

namespace vgrad::data {

Batch Dataset::get(int64_t index) const {
  if (index < 0 || index >= size()) fail("dataset: index {} out of range for {} examples", index, size());
  Batch b = get_batch(tensor(std::vector<int64_t>{index}, {1}));
  return {b.input.squeeze(0), b.target.squeeze(0)};
}

TensorDataset::TensorDataset(Tensor inputs, Tensor targets) : inputs_(std::move(inputs)), targets_(std::move(targets)) {
  if (inputs_.dim() == 0 || targets_.dim() == 0 || inputs_.shape()[0] != targets_.shape()[0])
    fail("TensorDataset: inputs {} and targets {} need the same first dimension", shape_str(inputs_.shape()),
         shape_str(targets_.shape()));
  inputs_ = inputs_.detach().contiguous();
  targets_ = targets_.detach().contiguous();
}

Batch TensorDataset::get_batch(const Tensor& indices) const {
  NoGradGuard no_grad;
  return {inputs_.index_select(0, indices), targets_.index_select(0, indices)};
}

struct Mnist::Loaded {
  Tensor images, labels;
  int64_t rows, cols, classes;
};

namespace {

// A model sized for one split's images fails on the other's only after a whole
// epoch has trained; compare with the sibling split's header now. A missing or
// unreadable sibling is left for its own load to report.
void check_same_image_size_as_sibling(const std::string& directory, const std::string& split,
                                      const std::string& images_path, const RawImageSet& raw) {
  const std::string sibling = split == "train" ? "test" : "train";
  std::string sibling_images;
  IdxArray header;
  try {
    sibling_images = resolve_mnist_paths(directory, sibling).images;
    header = read_idx_header(sibling_images, kIdxMagicImages);
  } catch (const Error&) {
    return;
  }
  if (header.dims[1] != raw.rows || header.dims[2] != raw.cols)
    fail("mnist: image sizes differ between splits: {} holds {}x{} images but {} holds {}x{}", images_path, raw.rows,
         raw.cols, sibling_images, header.dims[1], header.dims[2]);
}

}  // namespace

Mnist::Loaded Mnist::load(const std::string& directory, const std::string& split, const MnistOptions& options) {
  if (options.classes < 1) fail("mnist: {} classes (expected at least 1)", options.classes);
  const MnistPaths paths = resolve_mnist_paths(directory, split);
  const RawImageSet raw = read_mnist_pair(paths.images, paths.labels, options.max_bytes);
  // Checked here, not by the loss: there a bad label surfaces as "row 7" of a
  // shuffled batch, and in a test set it is silently counted wrong.
  for (size_t i = 0; i < raw.labels.size(); ++i)
    if (raw.labels[i] >= options.classes)
      fail("mnist: {}: label {} of record {} out of range for {} classes", paths.labels, raw.labels[i], i,
           options.classes);
  check_same_image_size_as_sibling(directory, split, paths.images, raw);
  Tensor images = Tensor::empty({raw.count, raw.rows * raw.cols});
  Tensor labels = Tensor::empty({raw.count}, DType::Int64);
  float* pixels = images.data<float>();
  for (size_t i = 0; i < raw.pixels.size(); ++i) pixels[i] = float(raw.pixels[i]) / 255.0f;
  std::copy(raw.labels.begin(), raw.labels.end(), labels.data<int64_t>());
  return {images, labels, raw.rows, raw.cols, options.classes};
}

Mnist::Mnist(const std::string& directory, const std::string& split, MnistOptions options)
    : Mnist(load(directory, split, options)) {}

Mnist::Mnist(Loaded loaded)
    : TensorDataset(std::move(loaded.images), std::move(loaded.labels)),
      rows_(loaded.rows),
      cols_(loaded.cols),
      classes_(loaded.classes) {}

std::string Mnist::default_directory() { return "/usr/share/datasets/fashion-mnist"; }

Normalizer Normalizer::fit(const Tensor& x) {
  // One streaming pass in double: no float64 copy of the whole data set.
  const Tensor host = x.detach().to(kCPU).contiguous().to(DType::Float32);
  const float* values = host.data<float>();
  double total = 0, total_squares = 0;
  const int64_t count = host.numel();
  for (int64_t i = 0; i < count; ++i) {
    total += values[i];
    total_squares += double(values[i]) * values[i];
  }
  Normalizer n;
  n.mean = total / double(std::max<int64_t>(host.numel(), 1));
  n.stddev = std::sqrt(std::max(0.0, total_squares / double(std::max<int64_t>(host.numel(), 1)) - n.mean * n.mean));
  if (!(n.stddev > 0)) fail("Normalizer: data has zero variance; cannot normalise");
  return n;
}

Tensor Normalizer::operator()(const Tensor& x) const { return affine(x, 1.0 / stddev, -mean / stddev); }

Tensor& Normalizer::apply_(Tensor& x) const {
  if (!is_floating(x.dtype())) fail("Normalizer: needs a floating-point tensor, got {}", dtype_name(x.dtype()));
  backend_for(x.device()).unary(UnaryOp::Affine, x.view(), x.view(), 1.0 / stddev, -mean / stddev);
  x.storage()->bump_version();
  return x;
}

Tensor scale_to_unit(const Tensor& x) { return affine(x.to(DType::Float32), 1.0 / 255.0, 0.0); }

}  // namespace vgrad::data

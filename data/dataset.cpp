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
  int64_t rows, cols;
};

Mnist::Loaded Mnist::load(const std::string& directory, const std::string& split) {
  const RawImageSet raw = read_mnist_split(directory, split);
  Tensor images = Tensor::empty({raw.count, raw.rows * raw.cols});
  Tensor labels = Tensor::empty({raw.count}, DType::Int64);
  float* pixels = images.data<float>();
  for (size_t i = 0; i < raw.pixels.size(); ++i) pixels[i] = float(raw.pixels[i]) / 255.0f;
  std::copy(raw.labels.begin(), raw.labels.end(), labels.data<int64_t>());
  return {images, labels, raw.rows, raw.cols};
}

Mnist::Mnist(const std::string& directory, const std::string& split) : Mnist(load(directory, split)) {}

Mnist::Mnist(Loaded loaded)
    : TensorDataset(std::move(loaded.images), std::move(loaded.labels)), rows_(loaded.rows), cols_(loaded.cols) {}

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

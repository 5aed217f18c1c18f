// TensorDataset, Mnist and transforms.
#include "data/dataset.h"

#include <cmath>

#include "autograd/grad_mode.h"
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
  std::vector<float> pixels(raw.pixels.size());
  for (size_t i = 0; i < pixels.size(); ++i) pixels[i] = float(raw.pixels[i]) / 255.0f;
  std::vector<int64_t> labels(raw.labels.begin(), raw.labels.end());
  return {tensor(pixels, {raw.count, raw.rows * raw.cols}), tensor(labels, {raw.count}), raw.rows, raw.cols};
}

Mnist::Mnist(const std::string& directory, const std::string& split) : Mnist(load(directory, split)) {}

Mnist::Mnist(Loaded loaded)
    : TensorDataset(std::move(loaded.images), std::move(loaded.labels)), rows_(loaded.rows), cols_(loaded.cols) {}

std::string Mnist::default_directory() { return "/usr/share/datasets/fashion-mnist"; }

Normalizer Normalizer::fit(const Tensor& x) {
  NoGradGuard no_grad;
  const Tensor x64 = x.to(DType::Float64);
  Normalizer n;
  n.mean = vgrad::mean(x64).item();
  n.stddev = std::sqrt(vgrad::var(x64, {}, 0).item());
  if (!(n.stddev > 0)) fail("Normalizer: data has zero variance; cannot normalise");
  return n;
}

Tensor Normalizer::operator()(const Tensor& x) const { return affine(x, 1.0 / stddev, -mean / stddev); }

Tensor scale_to_unit(const Tensor& x) { return affine(x.to(DType::Float32), 1.0 / 255.0, 0.0); }

}  // namespace vgrad::data

// TensorDataset, Mnist and transforms.
#include "data/dataset.h"

#include <algorithm>
#include <cmath>

#include "core/grad_mode.h"
#include "core/error.h"
#include "core/kernels.h"
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

Batch Dataset::get_batch_into(const Tensor& indices, Batch& /*buffer*/, int64_t /*capacity*/) const {
  return get_batch(indices);
}

Batch TensorDataset::get_batch(const Tensor& indices) const {
  NoGradGuard no_grad;
  return {inputs_.index_select(0, indices), targets_.index_select(0, indices)};
}

namespace {

// The rows of `source` at `indices` into the first rows of `buffer`, which is replaced by
// a fresh tensor of `capacity` rows (at least the batch's) when its row shape, dtype,
// device or size does not fit. Returns the rows written (a view when fewer than buffer's).
Tensor gather_rows_into(const Tensor& source, const Tensor& indices, Tensor& buffer, int64_t capacity) {
  const int64_t rows = indices.numel();
  const bool fits = buffer.defined() && buffer.dtype() == source.dtype() && buffer.device() == source.device() &&
                    buffer.is_contiguous() && buffer.dim() == source.dim() && buffer.shape()[0] >= rows &&
                    std::equal(buffer.shape().begin() + 1, buffer.shape().end(), source.shape().begin() + 1);
  if (!fits) {
    Shape shape = source.shape();
    shape[0] = std::max(rows, capacity);
    buffer = Tensor::empty(shape, source.dtype(), source.device());
  }
  const Tensor out = rows == buffer.shape()[0] ? buffer : buffer.narrow(0, 0, rows);
  backend_for(source.device()).index_select(source.view(), 0, indices.view(), out.view());
  return out;
}

}  // namespace

Batch TensorDataset::get_batch_into(const Tensor& indices, Batch& buffer, int64_t capacity) const {
  if (!inputs_.device().is_cpu() || !targets_.device().is_cpu()) return get_batch(indices);
  NoGradGuard no_grad;
  if (indices.dtype() != DType::Int64 || indices.dim() != 1 || !indices.device().is_cpu())
    fail("TensorDataset: batch indices must be a 1-D int64 tensor on the CPU, got {} {} on {}",
         shape_str(indices.shape()), dtype_name(indices.dtype()), indices.device().str());
  return {gather_rows_into(inputs_, indices, buffer.input, capacity),
          gather_rows_into(targets_, indices, buffer.target, capacity)};
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

namespace {

// One streaming pass in double over x viewed as (rows, features): no float64 copy of the data set.
void moments(const Tensor& x, int64_t features, std::vector<double>& mean, std::vector<double>& stddev) {
  const Tensor host = x.detach().to(kCPU).contiguous().to(DType::Float32);
  const float* values = host.data<float>();
  const int64_t rows = features ? host.numel() / features : 0;
  std::vector<double> total(size_t(features), 0.0), squares(size_t(features), 0.0);
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t f = 0; f < features; ++f) {
      const double v = values[r * features + f];
      total[size_t(f)] += v;
      squares[size_t(f)] += v * v;
    }
  mean.assign(size_t(features), 0.0);
  stddev.assign(size_t(features), 0.0);
  for (size_t f = 0; f < size_t(features); ++f) {
    mean[f] = total[f] / double(std::max<int64_t>(rows, 1));
    stddev[f] = std::sqrt(std::max(0.0, squares[f] / double(std::max<int64_t>(rows, 1)) - mean[f] * mean[f]));
  }
}

void check_input(const Normalizer& n, const Tensor& x) {
  if (!n.mean.defined() || !n.stddev.defined())
    fail("Normalizer: not fitted (use Normalizer::fit or fit_scalar on the training inputs)");
  if (!is_floating(x.dtype())) fail("Normalizer: needs a floating-point tensor, got {}", dtype_name(x.dtype()));
  const Shape& features = n.mean.shape();
  const bool fits = x.dim() >= static_cast<int64_t>(features.size()) &&
                    std::equal(features.begin(), features.end(), x.shape().end() - static_cast<int64_t>(features.size()));
  if (!fits)
    fail("Normalizer: input {} does not end in the fitted feature shape {}", shape_str(x.shape()), shape_str(features));
}

}  // namespace

Normalizer Normalizer::fit(const Tensor& x) {
  if (x.dim() < 1 || x.shape()[0] == 0)
    fail("Normalizer: fit needs examples along dim 0, got shape {}", shape_str(x.shape()));
  const Shape features(x.shape().begin() + 1, x.shape().end());
  std::vector<double> mean, stddev;
  moments(x, numel(features), mean, stddev);
  for (double& s : stddev)
    if (!(s > 0)) s = 1.0;  // a constant feature is centred only
  return {tensor(mean, features), tensor(stddev, features)};
}

Normalizer Normalizer::fit_scalar(const Tensor& x) {
  std::vector<double> mean, stddev;
  moments(x.reshape({-1, 1}), 1, mean, stddev);
  if (!(stddev[0] > 0)) fail("Normalizer: data of shape {} has zero variance; cannot normalise", shape_str(x.shape()));
  return {scalar_tensor(mean[0], {.dtype = DType::Float64}), scalar_tensor(stddev[0], {.dtype = DType::Float64})};
}

Tensor Normalizer::operator()(const Tensor& x) const {
  check_input(*this, x);
  if (mean.dim() == 0) return affine(x, 1.0 / stddev.item(), -mean.item() / stddev.item());  // one pass
  return (x - mean.to(x.dtype()).to(x.device())) / stddev.to(x.dtype()).to(x.device());
}

Tensor& Normalizer::apply_(Tensor& x) const {
  check_input(*this, x);
  if (mean.dim() == 0) {
    const double s = stddev.item(), m = mean.item();
    backend_for(x.device()).unary(UnaryOp::Affine, x.view(), x.view(), 1.0 / s, -m / s);
  } else {
    kernels::binary_into(BinaryOp::Sub, x, mean.to(x.device()), x, "Normalizer");
    kernels::binary_into(BinaryOp::Div, x, stddev.to(x.device()), x, "Normalizer");
  }
  x.storage()->bump_version();
  return x;
}

Tensor scale_to_unit(const Tensor& x) { return affine(x.to(DType::Float32), 1.0 / 255.0, 0.0); }

}  // namespace vgrad::data

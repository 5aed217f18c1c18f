// Datasets: anything with a size and a way to fetch a batch of examples by index,
// the in-memory TensorDataset, MNIST-format data, and the two standard transforms.
#pragma once
#include <cstdint>
#include <string>

#include "autograd/ops.h"
#include "data/idx.h"

namespace vgrad::data {

struct Batch {
  Tensor input;   // (N, ...) float
  Tensor target;  // (N) int64 labels, or (N, ...) regression targets
};

class Dataset {
 public:
  virtual ~Dataset() = default;
  virtual int64_t size() const = 0;
  virtual Batch get(int64_t index) const;  // one example: a batch of one, squeezed
  // The examples at `indices` (1-D int64, on the CPU) stacked into one batch.
  virtual Batch get_batch(const Tensor& indices) const = 0;
  // The same batch, written into `buffer`'s memory where the dataset can (the loader's
  // prefetch thread reuses its buffers: no allocation per batch). `buffer` holds what an
  // earlier call left there, referenced by nobody else; a dataset that gathers in place
  // (re)allocates it with `capacity` rows when it does not fit and returns its first
  // indices.numel() rows. The default returns get_batch(indices) and leaves `buffer` alone.
  virtual Batch get_batch_into(const Tensor& indices, Batch& buffer, int64_t capacity) const;
};

// Examples are rows of two tensors with the same first dim.
class TensorDataset : public Dataset {
 public:
  TensorDataset(Tensor inputs, Tensor targets);
  int64_t size() const override { return inputs_.shape()[0]; }
  Batch get_batch(const Tensor& indices) const override;
  Batch get_batch_into(const Tensor& indices, Batch& buffer, int64_t capacity) const override;
  const Tensor& inputs() const { return inputs_; }
  const Tensor& targets() const { return targets_; }

 private:
  Tensor inputs_, targets_;
};

struct MnistOptions {
  int64_t classes = 10;                     // every label must lie in [0, classes)
  int64_t max_bytes = kDefaultIdxMaxBytes;  // per file; see read_idx
};

// MNIST-format data (MNIST, Fashion-MNIST, KMNIST...) from an IDX directory:
// images (N, rows*cols) float32 scaled to [0, 1], labels (N) int64.
// split is "train" or "test"; files may be .gz or plain.
// Everything that would otherwise fail mid-training (or score NaN) is refused
// here, naming the file: no images, a label outside [0, classes) (with its record
// index), and an image size that differs from the other split's in the same
// directory (only that split's 16-byte header is read; it may be absent).
class Mnist : public TensorDataset {
 public:
  Mnist(const std::string& directory, const std::string& split, MnistOptions options = {});
  int64_t rows() const { return rows_; }
  int64_t cols() const { return cols_; }
  int64_t classes() const { return classes_; }
  static std::string default_directory();  // Debian's dataset-fashion-mnist location

 private:
  struct Loaded;
  static Loaded load(const std::string& directory, const std::string& split, const MnistOptions& options);
  explicit Mnist(Loaded loaded);
  int64_t rows_, cols_, classes_;
};

// Input normalisation with statistics fitted on the training set; apply the same to
// train and test data. fit() is per feature: a mean and std over the examples (dim 0)
// for every position of one example, so inputs (N, D) get mean and stddev of shape (D).
// A feature with zero variance keeps stddev 1 (it is only centred, as scikit-learn's
// StandardScaler does). fit_scalar() is one mean and std over all elements (0-d tensors),
// as torchvision's Normalize((0.1307,), (0.3081,)) for MNIST pixels.
struct Normalizer {
  Tensor mean, stddev;  // float64, on the CPU; per feature: one example's shape; scalar: 0-d

  static Normalizer fit(const Tensor& x);         // x (N, ...): statistics over dim 0, in double
  static Normalizer fit_scalar(const Tensor& x);  // over all elements, in double
  // (x − mean) / stddev, broadcast over x's leading dims, in x's dtype and on its device.
  // x (…, D...) must end in the fitted feature shape.
  Tensor operator()(const Tensor& x) const;
  Tensor& apply_(Tensor& x) const;  // the same, in place (no second copy of a data set)
};

// uint8-range values to [0, 1].
Tensor scale_to_unit(const Tensor& x);

}  // namespace vgrad::data

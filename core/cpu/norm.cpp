// CPU batch norm, forward and backward fused: per channel, two passes for the statistics
// (mean, then the squared deviations: no cancellation as in E[x²] − mean²) and one for
// the output; the backward one pass for Σdy and Σdy·(x − mean) and one for dx in the
// closed form. Channels run in parallel on the CPU's thread pool; each channel's sums
// are in a fixed order, so results do not depend on the thread count.
#include <cmath>
#include <cstdint>

#include "core/cpu/cpu_backend.h"
#include "core/cpu/thread_pool.h"

namespace vgrad::cpu {
namespace {

constexpr int kLanes = 8;  // independent partial sums: the loop vectorises

// Σ f(p[i]) over one plane, in kLanes partial sums of T, returned in double.
template <class T, class F> double plane_sum(const T* p, int64_t size, F f) {
  T lanes[kLanes] = {};
  int64_t i = 0;
  for (; i + kLanes <= size; i += kLanes)
    for (int j = 0; j < kLanes; ++j) lanes[j] += f(p[i + j]);
  for (; i < size; ++i) lanes[0] += f(p[i]);
  double total = 0;
  for (T lane : lanes) total += double(lane);
  return total;
}

struct NormShape {
  int64_t batch, channels, plane;  // x is (batch, channels, plane)
  explicit NormShape(const View& x)
      : batch(x.shape[0]), channels(x.shape[1]), plane(x.numel() / (x.shape[0] * x.shape[1])) {}
  int64_t count() const { return batch * plane; }  // values per channel
  int64_t offset(int64_t n, int64_t c) const { return (n * channels + c) * plane; }
};

template <class T>
void batch_norm_typed(const View& xv, const View& weight, const View& bias, double eps, const View& yv,
                      const View& mean_v, const View& var_v) {
  const NormShape s(xv);
  const T* x = xv.ptr<T>();
  T* y = yv.ptr<T>();
  parallel_for(s.channels, [&](int64_t c) {
    double sum = 0;
    for (int64_t n = 0; n < s.batch; ++n) sum += plane_sum(x + s.offset(n, c), s.plane, [](T v) { return v; });
    const double mean = sum / double(s.count());
    const T m = T(mean);
    double squares = 0;
    for (int64_t n = 0; n < s.batch; ++n)
      squares += plane_sum(x + s.offset(n, c), s.plane, [m](T v) { return (v - m) * (v - m); });
    const double var = squares / double(s.count());
    const double scale = (weight.data ? double(weight.ptr<T>()[c]) : 1.0) / std::sqrt(var + eps);
    const double shift = (bias.data ? double(bias.ptr<T>()[c]) : 0.0) - mean * scale;
    const T a = T(scale), b = T(shift);
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* in = x + s.offset(n, c);
      T* out = y + s.offset(n, c);
      for (int64_t i = 0; i < s.plane; ++i) out[i] = in[i] * a + b;
    }
    mean_v.ptr<T>()[c] = T(mean);
    var_v.ptr<T>()[c] = T(var);
  });
}

template <class T>
void batch_norm_backward_typed(const View& dy_v, const View& xv, const View& mean_v, const View& var_v,
                               const View& weight, double eps, const View& dx_v, const View& dweight_v,
                               const View& dbias_v) {
  const NormShape s(xv);
  const T* x = xv.ptr<T>();
  const T* dy = dy_v.ptr<T>();
  T* dx = dx_v.ptr<T>();
  parallel_for(s.channels, [&](int64_t c) {
    const T m = mean_v.ptr<T>()[c];
    const double invstd = 1.0 / std::sqrt(double(var_v.ptr<T>()[c]) + eps);
    double sum_dy = 0, sum_dy_xc = 0;  // Σdy, Σdy·(x − mean), in one pass over dy and x
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* g = dy + s.offset(n, c);
      const T* in = x + s.offset(n, c);
      T lanes_dy[kLanes] = {}, lanes_dy_xc[kLanes] = {};
      int64_t i = 0;
      for (; i + kLanes <= s.plane; i += kLanes)
        for (int j = 0; j < kLanes; ++j) {
          lanes_dy[j] += g[i + j];
          lanes_dy_xc[j] += g[i + j] * (in[i + j] - m);
        }
      for (; i < s.plane; ++i) {
        lanes_dy[0] += g[i];
        lanes_dy_xc[0] += g[i] * (in[i] - m);
      }
      for (int j = 0; j < kLanes; ++j) {
        sum_dy += double(lanes_dy[j]);
        sum_dy_xc += double(lanes_dy_xc[j]);
      }
    }
    dbias_v.ptr<T>()[c] = T(sum_dy);
    dweight_v.ptr<T>()[c] = T(sum_dy_xc * invstd);
    // dx = w·invstd·(dy − Σdy/M − (x − mean)·invstd²·Σdy·(x − mean)/M) = a·dy + b·x + k
    const double count = double(s.count());
    const double a = (weight.data ? double(weight.ptr<T>()[c]) : 1.0) * invstd;
    const double b = -a * invstd * invstd * sum_dy_xc / count;
    const double k = -a * sum_dy / count - b * double(m);
    const T ta = T(a), tb = T(b), tk = T(k);
    for (int64_t n = 0; n < s.batch; ++n) {
      const T* g = dy + s.offset(n, c);
      const T* in = x + s.offset(n, c);
      T* out = dx + s.offset(n, c);
      for (int64_t i = 0; i < s.plane; ++i) out[i] = ta * g[i] + tb * in[i] + tk;
    }
  });
}

}  // namespace

bool CpuBackend::batch_norm_impl(const View& x, const View& weight, const View& bias, double eps, const View& y,
                                 const View& mean, const View& var) {
  if (x.dtype == DType::Float32)
    batch_norm_typed<float>(x, weight, bias, eps, y, mean, var);
  else
    batch_norm_typed<double>(x, weight, bias, eps, y, mean, var);
  return true;
}

bool CpuBackend::batch_norm_backward_impl(const View& grad_y, const View& x, const View& mean, const View& var,
                                          const View& weight, double eps, const View& grad_x,
                                          const View& grad_weight, const View& grad_bias) {
  if (x.dtype == DType::Float32)
    batch_norm_backward_typed<float>(grad_y, x, mean, var, weight, eps, grad_x, grad_weight, grad_bias);
  else
    batch_norm_backward_typed<double>(grad_y, x, mean, var, weight, eps, grad_x, grad_weight, grad_bias);
  return true;
}

}  // namespace vgrad::cpu

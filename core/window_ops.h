// The one definition of what a max-pooling window computes, shared by the CPU loop
// (core/cpu/conv.cpp) and the CUDA kernel (cuda/conv.cu) so both devices agree on
// ties and NaN. C++17, nvcc-clean. The window layout is WindowGeometry's.
#pragma once
#include <cstdint>

#include "core/kernel_types.h"
#include "core/scalar_ops.h"

namespace vgrad::window {

// The max of window (oh, ow) of one (H, W) plane and its position h·W + w: the first
// of tied maxima, a NaN wins (the last one), as PyTorch. Padding is never chosen; a
// window has at least one pixel because padding is at most half the kernel.
template <class T>
VGRAD_HOST_DEVICE inline void max_of_window(const T* plane, const WindowGeometry& g, int64_t oh, int64_t ow, T& best,
                                            int64_t& where) {
  T max_value = T(0);
  int64_t at = -1;
  for (int64_t kh = 0; kh < g.kernel_h; ++kh) {
    const int64_t ih = oh * g.stride_h - g.pad_h + kh * g.dilation_h;
    if (ih < 0 || ih >= g.height) continue;
    for (int64_t kw = 0; kw < g.kernel_w; ++kw) {
      const int64_t iw = ow * g.stride_w - g.pad_w + kw * g.dilation_w;
      if (iw < 0 || iw >= g.width) continue;
      const T v = plane[ih * g.width + iw];
      if (at < 0 || v > max_value || scalar::is_nan(v)) {
        max_value = v;
        at = ih * g.width + iw;
      }
    }
  }
  best = max_value;
  where = at;
}

}  // namespace vgrad::window

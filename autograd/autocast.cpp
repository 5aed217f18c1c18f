// Autocast's thread-local state and its weight-cast cache.
#include "autograd/autocast.h"

#include <memory>
#include <unordered_map>

#include "autograd/node.h"
#include "autograd/ops.h"
#include "core/error.h"

namespace vgrad::autograd::autocast {
namespace {

// NOTE: the cache does not own the casts. A cast lives while something uses it (the graph
// that saved it for backward, the caller), so a step casts each weight once yet no cast
// outlives its last use: a training step's peak memory stays below float32's.
struct CachedCast {
  std::weak_ptr<TensorImpl> source;  // a freed weight's address may be reused: compare the owner
  uint64_t version = 0;
  std::weak_ptr<TensorImpl> cast;
};

struct State {
  bool enabled = false;
  DType low = DType::BFloat16;
  std::unordered_map<const TensorImpl*, CachedCast> cache;
};

State& state() {
  thread_local State s;
  return s;
}

// A cast is stale once its weight changed (an optimizer step bumps the version) or
// once a backward without retain_graph released the cast's node.
bool usable(const CachedCast& entry, const Tensor& cast, const Tensor& x, DType dtype) {
  return cast.defined() && entry.source.lock() == x.impl_shared() && entry.version == x.version() &&
         cast.dtype() == dtype && !(cast.grad_fn() && cast.grad_fn()->released());
}

}  // namespace

bool is_enabled() { return state().enabled; }
DType low_dtype() { return state().low; }

void set_state(bool enabled, DType low) {
  if (enabled && !is_half(low))
    fail("autocast: the low dtype must be bfloat16 or float16, got {}", dtype_name(low));
  State& s = state();
  if (s.enabled != enabled || s.low != low) s.cache.clear();
  s.enabled = enabled;
  s.low = low;
}

Tensor to_low(const Tensor& x) {
  State& s = state();
  if (!s.enabled || !x.defined() || x.dtype() != DType::Float32) return x;
  if (!(x.is_leaf() && x.requires_grad())) return to_dtype(x, s.low);
  CachedCast& entry = s.cache[x.impl_ptr()];
  std::shared_ptr<TensorImpl> alive = entry.cast.lock();
  Tensor cast = alive ? Tensor(std::move(alive)) : Tensor();
  if (!usable(entry, cast, x, s.low)) {
    cast = to_dtype(x, s.low);
    entry = {x.impl_shared(), x.version(), cast.impl_shared()};
  }
  return cast;
}

Tensor to_float32(const Tensor& x) {
  if (!state().enabled || !x.defined() || !is_half(x.dtype())) return x;
  return to_dtype(x, DType::Float32);
}

namespace {
template <class Cast> CastOperands cast_operands(const Tensor& a, const Tensor& b, const Tensor& c, Cast cast) {
  CastOperands out{cast(a), cast(b), cast(c)};
  out.changed = !out.first.is_same(a) || !out.second.is_same(b) || !out.third.is_same(c);
  return out;
}
}  // namespace

CastOperands to_low(const Tensor& a, const Tensor& b, const Tensor& c) {
  return cast_operands(a, b, c, [](const Tensor& t) { return to_low(t); });
}
CastOperands to_float32(const Tensor& a, const Tensor& b, const Tensor& c) {
  return cast_operands(a, b, c, [](const Tensor& t) { return to_float32(t); });
}

void clear_cache() { state().cache.clear(); }

size_t cache_bytes() {
  size_t total = 0;
  for (const auto& [key, entry] : state().cache)
    if (const std::shared_ptr<TensorImpl> cast = entry.cast.lock()) total += size_t(Tensor(cast).numel()) * dtype_size(Tensor(cast).dtype());
  return total;
}

Suspend::Suspend() : enabled_(state().enabled) { state().enabled = false; }
Suspend::~Suspend() { state().enabled = enabled_; }

}  // namespace vgrad::autograd::autocast

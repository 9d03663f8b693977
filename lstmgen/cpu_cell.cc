// The LSTM cell's per-step elementwise work as XLA FFI kernels for the CPU backend, one pass
// over memory each, and the transposed bf16 copy that bf16 weight gradients multiply (see
// lstmgen/cpu_cell.py for why and when they are used).
//
// The step kernels work in place on the recurrence's T x B x 4H buffer (operand 0, aliased to result 0),
// slot t: the forward step turns the input projections there into activations [i, f, g, o]
// (and writes c and h into slot t of the T x B x H state buffers, also in place), the backward
// step turns the activations into gate gradients. Rows are split into chunks that
// this thread and one pool thread take from a shared counter, so a busy pool never stalls the
// step; per-chunk bias-gradient partials are summed in chunk order, so results do not depend on
// which thread did what.

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <memory>
#include <thread>
#include <vector>

#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;

// Lets a handler take XLA's intra-op thread pool as a plain parameter, so that its binding can
// be inferred from its signature (ffi.h binds ThreadPool only through an explicit Ctx<>).
namespace xla::ffi {
template <>
struct CtxBinding<ThreadPool> {
  using Ctx = ThreadPool;
};
}  // namespace xla::ffi

namespace {

// Eigen's single-precision rational tanh (XLA's CPU backend uses the same coefficients), plain
// arithmetic so that GCC vectorizes the loops that call it.
inline float Tanh(float x) {
  x = std::min(7.90531110763549805f, std::max(-7.90531110763549805f, x));
  const float x2 = x * x;
  float p = -2.76076847742355e-16f;
  p = p * x2 + 2.00018790482477e-13f;
  p = p * x2 + -8.60467152213735e-11f;
  p = p * x2 + 5.12229709037114e-08f;
  p = p * x2 + 1.48572235717979e-05f;
  p = p * x2 + 6.37261928875436e-04f;
  p = p * x2 + 4.89352455891786e-03f;
  p = p * x;
  float q = 1.19825839466702e-06f;
  q = q * x2 + 1.18534705686654e-04f;
  q = q * x2 + 2.26843463243900e-03f;
  q = q * x2 + 4.89352518554385e-03f;
  return p / q;
}

// float -> bfloat16 bits, round to nearest even (as XLA's convert); NaN stays NaN.
inline uint16_t ToBf16(float x) {
  uint32_t u;
  std::memcpy(&u, &x, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u) return static_cast<uint16_t>((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return static_cast<uint16_t>(u >> 16);
}

inline void Store(float* dst, float x) { *dst = x; }
inline void Store(uint16_t* dst, float x) { *dst = ToBf16(x); }

// Runs body(first_row, end_row, chunk) over `rows` rows in chunks, on this thread and at most
// one thread of XLA's intra-op pool.
template <typename Body>
void ParallelRows(ffi::ThreadPool& pool, int64_t rows, int64_t chunks, const Body& body) {
  struct State {
    std::atomic<int64_t> next{0};
    std::atomic<int64_t> done{0};
  };
  auto state = std::make_shared<State>();
  const int64_t per = (rows + chunks - 1) / chunks;
  auto work = [state, per, rows, chunks, &body]() {
    for (int64_t k; (k = state->next.fetch_add(1)) < chunks;) {
      body(k * per, std::min(rows, (k + 1) * per), k);
      state->done.fetch_add(1, std::memory_order_release);
    }
  };
  if (chunks > 1 && pool.num_threads() > 1) {
    // A helper that starts after every chunk is taken only reads the counter (which it holds a
    // reference to) and never calls `body`, which dies when this function returns.
    pool.Schedule([work] { work(); });
  }
  work();
  while (state->done.load(std::memory_order_acquire) < chunks) std::this_thread::yield();
}

constexpr int64_t kChunks = 8;

template <ffi::DataType kOut>
ffi::Error ForwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> buf,
                       ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> hs,
                       ffi::Buffer<ffi::S32> t_buf, ffi::Buffer<ffi::F32> bias,
                       ffi::Buffer<ffi::F32> rec, ffi::Buffer<ffi::F32> c0,
                       ffi::ResultBuffer<ffi::F32> buf_out, ffi::ResultBuffer<ffi::F32> cs_out,
                       ffi::ResultBuffer<ffi::F32> hs_out, ffi::ResultBuffer<kOut> h_cast) {
  const auto dims = buf.dimensions();
  const int64_t B = dims[1], H4 = dims[2], H = H4 / 4;
  const int64_t t = t_buf.typed_data()[0];
  float* slot = buf_out->typed_data() + t * B * H4;
  const float* c_prev = t > 0 ? cs_out->typed_data() + (t - 1) * B * H : c0.typed_data();
  float* c_t = cs_out->typed_data() + t * B * H;
  float* h_t = hs_out->typed_data() + t * B * H;
  const float* b = bias.typed_data();
  ParallelRows(pool, B, kChunks, [&](int64_t r0, int64_t r1, int64_t) {
    for (int64_t r = r0; r < r1; ++r) {
      float* a = slot + r * H4;  // Input projections in, activations out.
      const float* rr = rec.typed_data() + r * H4;
      // sigmoid(x) = 0.5 * tanh(x / 2) + 0.5, as the JAX cell computes it.
      for (int64_t j = 0; j < 2 * H; ++j) a[j] = Tanh((a[j] + b[j] + rr[j]) * 0.5f) * 0.5f + 0.5f;
      for (int64_t j = 2 * H; j < 3 * H; ++j) a[j] = Tanh(a[j] + b[j] + rr[j]);
      for (int64_t j = 3 * H; j < H4; ++j) a[j] = Tanh((a[j] + b[j] + rr[j]) * 0.5f) * 0.5f + 0.5f;
      const float* cp = c_prev + r * H;
      float* c = c_t + r * H;
      float* h = h_t + r * H;
      auto* hc = h_cast->typed_data() + r * H;
#pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        const float cj = a[H + j] * cp[j] + a[j] * a[2 * H + j];
        const float hj = a[3 * H + j] * Tanh(cj);
        c[j] = cj;
        h[j] = hj;
        Store(hc + j, hj);
      }
    }
  });
  return ffi::Error::Success();
}

template <ffi::DataType kOut>
ffi::Error BackwardImpl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> buf,
                        ffi::Buffer<ffi::S32> t_buf, ffi::Buffer<ffi::F32> dhs,
                        ffi::Buffer<ffi::F32> cs, ffi::Buffer<ffi::F32> c0,
                        ffi::Buffer<ffi::F32> dh_rec, ffi::Buffer<ffi::F32> dc_in,
                        ffi::Buffer<ffi::F32> db_in, ffi::ResultBuffer<ffi::F32> buf_out,
                        ffi::ResultBuffer<kOut> dgates_out, ffi::ResultBuffer<ffi::F32> dcf_out,
                        ffi::ResultBuffer<ffi::F32> db_out) {
  const auto dims = buf.dimensions();
  const int64_t B = dims[1], H4 = dims[2], H = H4 / 4;
  const int64_t t = t_buf.typed_data()[0];
  float* slot = buf_out->typed_data() + t * B * H4;
  const float* c_t = cs.typed_data() + t * B * H;
  const float* c_prev = t > 0 ? cs.typed_data() + (t - 1) * B * H : c0.typed_data();
  const float* dh_out = dhs.typed_data() + t * B * H;
  std::vector<float> partial(kChunks * H4, 0.0f);
  ParallelRows(pool, B, kChunks, [&](int64_t r0, int64_t r1, int64_t k) {
    float* db = partial.data() + k * H4;
    for (int64_t r = r0; r < r1; ++r) {
      float* a = slot + r * H4;  // Activations in, gate gradients out.
      auto* dg = dgates_out->typed_data() + r * H4;
      const float* c = c_t + r * H;
      const float* cp = c_prev + r * H;
      const float* dho = dh_out + r * H;
      const float* dhr = dh_rec.typed_data() + r * H;
      const float* dci = dc_in.typed_data() + r * H;
      float* dcf = dcf_out->typed_data() + r * H;
#pragma GCC ivdep
      for (int64_t j = 0; j < H; ++j) {
        const float i = a[j], f = a[H + j], g = a[2 * H + j], o = a[3 * H + j];
        const float tanh_c = Tanh(c[j]);
        const float dh = dhr[j] + dho[j];
        const float dc = dci[j] + dh * o * (1 - tanh_c * tanh_c);
        const float gi = dc * g * i * (1 - i);
        const float gf = dc * f * cp[j] * (1 - f);
        const float gg = dc * i * (1 - g * g);
        const float go = dh * tanh_c * o * (1 - o);
        dcf[j] = dc * f;
        a[j] = gi;
        a[H + j] = gf;
        a[2 * H + j] = gg;
        a[3 * H + j] = go;
        Store(dg + j, gi);
        Store(dg + H + j, gf);
        Store(dg + 2 * H + j, gg);
        Store(dg + 3 * H + j, go);
        db[j] += gi;
        db[H + j] += gf;
        db[2 * H + j] += gg;
        db[3 * H + j] += go;
      }
    }
  });
  const float* db_prev = db_in.typed_data();
  float* db = db_out->typed_data();
  for (int64_t j = 0; j < H4; ++j) db[j] = db_prev[j];
  for (int64_t k = 0; k < kChunks; ++k)
    for (int64_t j = 0; j < H4; ++j) db[j] += partial[k * H4 + j];
  return ffi::Error::Success();
}

// out[i, n] = bf16(in[n, i]) for a [N, I] matrix, in 32 x 32 tiles (both sides' cache lines used
// whole); the I tiles are shared out like rows above.
ffi::Error TransposeToBf16Impl(ffi::ThreadPool pool, ffi::Buffer<ffi::F32> in,
                               ffi::ResultBuffer<ffi::BF16> out) {
  const auto dims = in.dimensions();
  const int64_t N = dims[0], I = dims[1];
  constexpr int64_t kTile = 32;
  const float* src = in.typed_data();
  uint16_t* dst = out->typed_data();
  const int64_t tiles = (I + kTile - 1) / kTile;
  ParallelRows(pool, tiles, std::min<int64_t>(tiles, kChunks), [&](int64_t k0, int64_t k1, int64_t) {
    for (int64_t i0 = k0 * kTile; i0 < std::min(I, k1 * kTile); i0 += kTile) {
      const int64_t i1 = std::min(I, i0 + kTile);
      for (int64_t n0 = 0; n0 < N; n0 += kTile) {
        const int64_t n1 = std::min(N, n0 + kTile);
        for (int64_t i = i0; i < i1; ++i)
          for (int64_t n = n0; n < n1; ++n) dst[i * N + n] = ToBf16(src[n * I + i]);
      }
    }
  });
  return ffi::Error::Success();
}

}  // namespace

// Each handler's binding (its arguments, results and context, in order) is inferred from its
// C++ signature.
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmCellForwardF32, ForwardImpl<ffi::F32>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmCellForwardBF16, ForwardImpl<ffi::BF16>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmCellBackwardF32, BackwardImpl<ffi::F32>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(LstmCellBackwardBF16, BackwardImpl<ffi::BF16>);
XLA_FFI_DEFINE_HANDLER_SYMBOL(TransposeToBf16, TransposeToBf16Impl);

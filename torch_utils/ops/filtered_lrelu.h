// The fused first half of filtered_lrelu: bias, upsampling with the filter fu,
// leaky ReLU, gain and clamp, in one pass that writes the activated image and,
// for the backward pass, the derivative of the activation at each of its
// pixels. The second half, the downsampling filter, is a plain upfirdn2d pass
// (filtered_lrelu.py), and so are the derivatives of both filters. The
// per-pixel code is compiled for the host and the device alike, for the CPU
// kernel (filtered_lrelu.cpp) and the CUDA kernel (filtered_lrelu.cu).

#pragma once

#include <ATen/core/Tensor.h>
#include <cmath>
#include <optional>
#include <tuple>
#include "upfirdn2d.h"

namespace filtered_lrelu {

// The activation, applied to the filtered value v:
//     y = clamp(lrelu(v, slope) * gain, -clamp, +clamp),
// and dy/dv = gain * (v > 0 ? 1 : slope), or 0 where the clamp cut y off.
struct Activation
{
    double slope;   // Double, so that float64 runs keep their precision.
    double gain;
    double clamp;   // +inf when not clamping.
};

// The activation of the op's arguments, where a negative clamp means none.
inline Activation make_activation(double slope, double gain, double clamp)
{
    return {slope, gain, clamp < 0 ? INFINITY : clamp};
}

// Returns y for the filtered value v, and dy/dv in `grad`, as the reference's
// autograd differentiates it. v is rounded to T first: the reference stores
// the filtered image in T before its activation, and rounding alike makes
// both take the same sides of 0 and of the clamp.
template <class T, class S> UPFIRDN2D_HD S activate(S v, const Activation& a, S& grad)
{
    v = S(T(v));
    const S slope = (v > S(0)) ? S(1) : S(a.slope);
    const S out = v * slope * S(a.gain);
    const S c = S(a.clamp);
    const bool inside = (out >= -c && out <= c); // Where torch.clamp passes the gradient on.
    grad = inside ? slope * S(a.gain) : S(0);
    return inside ? out : (out > S(0) ? c : -c);
}

// Output element i, pixel p, of the op: writes y and, unless null, dy/dv.
// The bias goes on the input samples, so inserted zeros and padding stay
// zero, as when the reference adds it before upsampling.
template <class T> UPFIRDN2D_HD void bias_upsample_lrelu_pixel(const upfirdn2d::Geometry& g, const T* __restrict__ x,
    const T* __restrict__ b, const float* __restrict__ f, const Activation& a, T* __restrict__ y, T* __restrict__ dy_dv,
    uint32_t i, const upfirdn2d::Pixel& p)
{
    using S = upfirdn2d::acc_t<T>;
    const S bias = b ? S(b[p.c]) : S(0);
    const S v = upfirdn2d::fir_pixel<S>(g, f, p, [&](int offset) { return S(x[offset]) + bias; });
    S grad;
    y[i] = T(activate<T>(v, a, grad));
    if (dy_dv)
        dy_dv[i] = T(grad);
}

// Checks the arguments of the op and returns the geometry of its upsampling
// pass (filtered_lrelu.cpp).
upfirdn2d::Geometry prepare(const at::Tensor& x, const std::optional<at::Tensor>& b, const at::Tensor& fu, int64_t up,
    int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double up_gain);

// The outputs of the op: y, and dy/dv when write_grad, else an empty tensor.
inline std::tuple<at::Tensor, at::Tensor> empty_outputs(const upfirdn2d::Geometry& g, const at::Tensor& x, bool write_grad)
{
    return {upfirdn2d::empty_output(g, x), write_grad ? upfirdn2d::empty_output(g, x) : at::empty({0}, x.options())};
}

} // namespace filtered_lrelu

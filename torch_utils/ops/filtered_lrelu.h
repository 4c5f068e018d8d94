// The fused first half of filtered_lrelu: bias, upsampling with the filter fu,
// leaky ReLU, gain and clamp, in one pass that writes the activated image and,
// for the backward pass, the derivative of the activation at each of its
// pixels. The second half, the downsampling filter, is a plain upfirdn2d pass
// (filtered_lrelu.py), and so are the derivatives of both filters.

#pragma once

#include <ATen/core/Tensor.h>
#include <optional>
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

#ifdef __CUDACC__

// Returns y for the filtered value v, and dy/dv in `grad`, as the reference's
// autograd differentiates it. v is rounded to T first: the reference stores
// the filtered image in T before its activation, and rounding alike makes
// both take the same sides of 0 and of the clamp.
template <class T, class S> __device__ __forceinline__ S activate(S v, const Activation& a, S& grad)
{
    v = S(T(v));
    const S slope = (v > S(0)) ? S(1) : S(a.slope);
    const S out = v * slope * S(a.gain);
    const S c = S(a.clamp);
    const bool inside = (out >= -c && out <= c); // Where torch.clamp passes the gradient on.
    grad = inside ? slope * S(a.gain) : S(0);
    return inside ? out : (out > S(0) ? c : -c);
}

#endif

// Checks the arguments of the op and returns the geometry of its upsampling
// pass (filtered_lrelu.cpp).
upfirdn2d::Geometry prepare(const at::Tensor& x, const std::optional<at::Tensor>& b, const at::Tensor& fu, int64_t up,
    int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double up_gain);

} // namespace filtered_lrelu

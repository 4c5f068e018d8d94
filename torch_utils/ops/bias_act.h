// Fused bias + activation + gain + clamp: the math of one element, shared by
// the CPU kernel (bias_act.cpp) and the CUDA kernel (bias_act.cu), and the
// host-side argument handling they have in common.
//
// One op covers the forward pass and both derivatives; `grad` selects which:
//   grad 0:  out = clamp(f(x + b) * gain)
//   grad 1:  out = x * f'(xref + b) * gain             (x is dL/dout)
//   grad 2:  out = x * f''(xref + b) * gain * dy       (x is dL/d(grad-1 out))
// and both derivatives are zero where the forward output was clamped.
// f' and f'' are computed from the saved forward output `yref` when f can be
// inverted from it (so the backward pass keeps y alive instead of x), and from
// the saved input `xref` otherwise (swish).

#pragma once

#include <ATen/core/Tensor.h>
#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <optional>
#include <type_traits>

#ifdef __CUDACC__
#define BA_FN __host__ __device__ __forceinline__
#else
#define BA_FN inline
#endif

namespace bias_act {

//------------------------------------------------------------------------
// Scalar type used for the arithmetic on a stored type.

template <class T> struct ComputeType { using type = T; };
template <> struct ComputeType<c10::Half> { using type = float; };
template <> struct ComputeType<c10::BFloat16> { using type = float; };
template <class T> using compute_t = typename ComputeType<T>::type;

//------------------------------------------------------------------------
// Per-call constants in the compute type.

template <class S> struct Params
{
    S alpha;    // Shape parameter of the activation (lrelu slope).
    S gain;     // Output scale.
    S inv_gain; // 1 / gain, or 0 when gain is 0; recovers f(x) from the saved output.
    S clamp;    // Output bound; NaN when clamping is off, so that no comparison with it fires.
};

//------------------------------------------------------------------------
// exp, expm1 and log1p for the host compiler to vectorize: the libm versions
// are opaque calls that keep every loop using them scalar. The exp range
// reduction is exact, the log1p one keeps the precision of small arguments,
// and the polynomials are Taylor series cut where the remainder drops below
// half an ulp. Arguments are clamped to +-64 (float) or
// +-512 (double), which changes no result of the activations below by more
// than e^-64 (e^-512), and keeps them away from denormal numbers: the
// vectorized loops evaluate both sides of every select, so the saturated
// side is computed for every element too (e.g. x * sigmoid(-64) in swish),
// and each denormal costs a microcode assist of a hundred cycles. On the
// device, CUDA's own functions are used.

#ifndef __CUDA_ARCH__

template <class S> struct FloatTraits;
template <> struct FloatTraits<float>
{
    using Bits = int32_t;
    static constexpr int mantissa_bits = 23;
    static constexpr Bits exponent_bias = 127;
    static constexpr float shifter = 12582912.0f;            // 1.5 * 2^23
    static constexpr float ln2_hi = 0.693359375f;            // ln 2 rounded to 9 bits, so n * ln2_hi is exact
    static constexpr float ln2_lo = -2.12194440e-4f;         // ln 2 - ln2_hi
    static constexpr float exp_lo = -64.0f, exp_hi = 64.0f;  // Saturation bounds (see above).
    static constexpr int expm1_terms = 7;                    // |r|^8 / 8! < 2^-25 |r| for |r| <= ln(2) / 2
    static constexpr int atanh_terms = 6;                    // s^12 / 13 < 2^-25 for |s| <= 0.1716
};
template <> struct FloatTraits<double>
{
    using Bits = int64_t;
    static constexpr int mantissa_bits = 52;
    static constexpr Bits exponent_bias = 1023;
    static constexpr double shifter = 6755399441055744.0;    // 1.5 * 2^52
    static constexpr double ln2_hi = 6.93147180369123816490e-01; // ln 2 rounded to 32 bits
    static constexpr double ln2_lo = 1.90821492927058770002e-10; // ln 2 - ln2_hi
    static constexpr double exp_lo = -512.0, exp_hi = 512.0;
    static constexpr int expm1_terms = 13;                   // |r|^14 / 14! < 2^-54 |r|
    static constexpr int atanh_terms = 11;                   // s^22 / 23 < 2^-54
};

template <class To, class From> inline To bit_cast(From v)
{
    static_assert(sizeof(To) == sizeof(From), "bit_cast needs equal sizes");
    To r;
    std::memcpy(&r, &v, sizeof(To));
    return r;
}

// 1 / k! for k = 0..N, computed at compile time.
template <int N> struct InvFactorials
{
    double c[N + 1];
    constexpr InvFactorials() : c()
    {
        c[0] = 1;
        for (int k = 1; k <= N; k++)
            c[k] = c[k - 1] / k;
    }
};

// Writes x = n ln2 + r with integer n and |r| <= ln(2) / 2, and returns
// 2^n in `scale` and exp(r) - 1 in `em1`.
template <class S> inline void exp_reduce(S x, S& scale, S& em1)
{
    using F = FloatTraits<S>;
    using B = typename F::Bits;
    x = (x < F::exp_lo) ? F::exp_lo : (x > F::exp_hi) ? F::exp_hi : x; // NaN passes through.

    // Adding the shifter rounds x / ln2 to the integer n, held in the low
    // mantissa bits of t; subtracting it again gives n as a float.
    S t = x * S(1.4426950408889634) + F::shifter;
    S n = t - F::shifter;
    S r = (x - n * F::ln2_hi) - n * F::ln2_lo;

    static constexpr InvFactorials<F::expm1_terms> coef;
    S p = S(coef.c[F::expm1_terms]);
    for (int k = F::expm1_terms - 1; k >= 1; k--)
        p = p * r + S(coef.c[k]);
    em1 = p * r;

    B n_bits = bit_cast<B>(t) - bit_cast<B>(F::shifter);
    scale = bit_cast<S>((n_bits + F::exponent_bias) << F::mantissa_bits);
}

template <class S> inline S fexp(S x)
{
    S scale, em1;
    exp_reduce(x, scale, em1);
    return scale + scale * em1;
}

template <class S> inline S fexpm1(S x)
{
    S scale, em1;
    exp_reduce(x, scale, em1);
    return (scale - S(1)) + scale * em1; // Exactly em1 near 0, where scale = 1.
}

// log(1 + u) for 0 <= u <= 1. With 1 + u = 2^k m, k = [1 + u > sqrt 2], it is
// k ln2 + 2 atanh(s), s = (m - 1) / (m + 1), and s is formed from u directly
// so that small u keep their precision.
template <class S> inline S flog1p_unit(S u)
{
    using F = FloatTraits<S>;
    bool k = u > S(0.41421356237309505);
    S s = k ? (u - S(1)) / (u + S(3)) : u / (u + S(2));
    S s2 = s * s;
    S p = S(1.0 / (2 * F::atanh_terms - 1));
    for (int j = F::atanh_terms - 2; j >= 0; j--)
        p = p * s2 + S(1.0 / (2 * j + 1));
    return (k ? S(0.6931471805599453) : S(0)) + S(2) * s * p;
}

#else

template <class S> __device__ __forceinline__ S fexp(S x) { return exp(x); }
template <class S> __device__ __forceinline__ S fexpm1(S x) { return expm1(x); }
template <class S> __device__ __forceinline__ S flog1p_unit(S u) { return log1p(u); }

#endif

//------------------------------------------------------------------------
// Activations. f(x, alpha) is the function; d1 and d2 its first and second
// derivatives, given the pre-activation x when ref_x is set, else y = f(x).
// Ids match `cuda_idx` in bias_act.py.

enum ActId { kLinear = 1, kRelu, kLrelu, kTanh, kSigmoid, kElu, kSelu, kSoftplus, kSwish };

struct Linear
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S) { return x; }
    template <class S> static BA_FN S d1(S, S, S) { return S(1); }
    template <class S> static BA_FN S d2(S, S, S) { return S(0); }
};

// Comparisons are ordered so that NaN propagates as in PyTorch.
struct Relu
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S) { return (x < S(0)) ? S(0) : x; }
    template <class S> static BA_FN S d1(S, S y, S) { return (y <= S(0)) ? S(0) : S(1); }
    template <class S> static BA_FN S d2(S, S, S) { return S(0); }
};

struct Lrelu
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S alpha) { return (x > S(0)) ? x : x * alpha; }
    template <class S> static BA_FN S d1(S, S y, S alpha) { return (y > S(0)) ? S(1) : alpha; }
    template <class S> static BA_FN S d2(S, S, S) { return S(0); }
};

struct Tanh
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S) { S e = fexpm1(S(2) * x); return e / (e + S(2)); }
    template <class S> static BA_FN S d1(S, S y, S) { return S(1) - y * y; }
    template <class S> static BA_FN S d2(S, S y, S) { return S(-2) * y * (S(1) - y * y); }
};

struct Sigmoid
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S) { return S(1) / (S(1) + fexp(-x)); }
    template <class S> static BA_FN S d1(S, S y, S) { return y * (S(1) - y); }
    template <class S> static BA_FN S d2(S, S y, S) { return y * (S(1) - y) * (S(1) - S(2) * y); }
};

// ELU with a fixed scale of 1 (alpha is ignored), as in NVIDIA's definition.
// At 0 the derivatives are those of the negative side, as in PyTorch.
struct Elu
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S) { return (x > S(0)) ? x : fexpm1(x); }
    template <class S> static BA_FN S d1(S, S y, S) { return (y > S(0)) ? S(1) : y + S(1); }
    template <class S> static BA_FN S d2(S, S y, S) { return (y > S(0)) ? S(0) : y + S(1); }
};

struct Selu
{
    static constexpr bool ref_x = false;
    static constexpr double scale = 1.0507009873554804934193349852946;
    static constexpr double scale_alpha = 1.0507009873554804934193349852946 * 1.6732632423543772848170429916717;
    template <class S> static BA_FN S f(S x, S) { return (x > S(0)) ? S(scale) * x : S(scale_alpha) * fexpm1(x); }
    template <class S> static BA_FN S d1(S, S y, S) { return (y > S(0)) ? S(scale) : y + S(scale_alpha); }
    template <class S> static BA_FN S d2(S, S y, S) { return (y > S(0)) ? S(0) : y + S(scale_alpha); }
};

// f = log(1 + e^x), written so that neither branch overflows or cancels;
// f' = 1 - e^-y and f'' = f' e^-y in terms of y = f(x).
struct Softplus
{
    static constexpr bool ref_x = false;
    template <class S> static BA_FN S f(S x, S)
    {
        S ax = (x < S(0)) ? -x : x;
        return ((x > S(0)) ? x : S(0)) + flog1p_unit(fexp(-ax));
    }
    template <class S> static BA_FN S d1(S, S y, S) { return -fexpm1(-y); }
    template <class S> static BA_FN S d2(S, S y, S) { S e = fexpm1(-y); return -e * (S(1) + e); }
};

// f = x sigmoid(x) cannot be inverted from its output: the derivatives use x.
struct Swish
{
    static constexpr bool ref_x = true;
    template <class S> static BA_FN S sigmoid(S x) { return S(1) / (S(1) + fexp(-x)); }
    template <class S> static BA_FN S f(S x, S) { return x * sigmoid(x); }
    template <class S> static BA_FN S d1(S x, S, S)
    {
        S s = sigmoid(x);
        return s * (S(1) + x * (S(1) - s));
    }
    template <class S> static BA_FN S d2(S x, S, S)
    {
        S s = sigmoid(x);
        return s * (S(1) - s) * (S(2) + x * (S(1) - S(2) * s));
    }
};

//------------------------------------------------------------------------
// One element of the op. `xb` is xref + b and `yref` the saved output; each
// is only meaningful when the activation reads it (see ref_x).

template <class Act, class S> BA_FN S forward_element(S x, S b, const Params<S>& p)
{
    S y = Act::f(x + b, p.alpha) * p.gain;
    return (y > p.clamp) ? p.clamp : (y < -p.clamp) ? -p.clamp : y; // Keeps NaN, like torch.clamp.
}

template <class Act, int G, class S> BA_FN S backward_element(S g, S xb, S yref, S dy, const Params<S>& p)
{
    static_assert(G == 1 || G == 2, "backward_element computes derivatives of order 1 or 2");
    S fx = Act::ref_x ? Act::f(xb, p.alpha) : yref * p.inv_gain;
    S d = (G == 1) ? Act::d1(xb, fx, p.alpha) : Act::d2(xb, fx, p.alpha) * dy;

    // The forward output was clamped exactly where its magnitude reached the bound.
    S out = Act::ref_x ? fx * p.gain : yref;
    S out_abs = (out < S(0)) ? -out : out;
    return (out_abs >= p.clamp) ? S(0) : g * d * p.gain;
}

//------------------------------------------------------------------------
// Host side: validated arguments, and runtime-to-compile-time dispatch.

struct Args
{
    at::Tensor out;     // Output, with the layout of x.
    const void* x;
    const void* b;      // Null without bias.
    const void* xref;   // Null when not given.
    const void* yref;
    const void* dy;
    int64_t size;       // Number of elements.
    int64_t bias_len;   // Length of b.
    int64_t bias_step;  // x.stride(dim): element i of x meets b[(i / bias_step) % bias_len].
    int grad;
    int act;
    double alpha;
    double gain;
    double clamp;       // Negative: no clamping.
};

// Checks the arguments of the op and allocates its output (bias_act.cpp).
Args prepare(const at::Tensor& x, const std::optional<at::Tensor>& b, const std::optional<at::Tensor>& xref,
    const std::optional<at::Tensor>& yref, const std::optional<at::Tensor>& dy,
    int64_t grad, int64_t dim, int64_t act, double alpha, double gain, double clamp);

template <class S> Params<S> make_params(const Args& a)
{
    Params<S> p;
    p.alpha = S(a.alpha);
    p.gain = S(a.gain);
    p.inv_gain = (a.gain != 0) ? S(1.0 / a.gain) : S(0);
    p.clamp = (a.clamp >= 0) ? S(a.clamp) : S(NAN);
    return p;
}

// Calls fn(Act{}, std::integral_constant<int, G>{}) for the runtime act and grad.
template <class Fn> void dispatch(int act, int grad, Fn&& fn)
{
    auto with_act = [&](auto a)
    {
        if (grad == 0) fn(a, std::integral_constant<int, 0>{});
        else if (grad == 1) fn(a, std::integral_constant<int, 1>{});
        else fn(a, std::integral_constant<int, 2>{});
    };
    switch (act)
    {
        case kLinear:   with_act(Linear{}); break;
        case kRelu:     with_act(Relu{}); break;
        case kLrelu:    with_act(Lrelu{}); break;
        case kTanh:     with_act(Tanh{}); break;
        case kSigmoid:  with_act(Sigmoid{}); break;
        case kElu:      with_act(Elu{}); break;
        case kSelu:     with_act(Selu{}); break;
        case kSoftplus: with_act(Softplus{}); break;
        case kSwish:    with_act(Swish{}); break;
        default:        TORCH_CHECK(false, "bias_act: unknown activation id ", act);
    }
}

} // namespace bias_act

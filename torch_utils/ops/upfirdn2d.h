// One FIR pass of upfirdn2d (upsample by zero insertion, pad, correlate with
// a 2D filter, downsample) as the kernels compute it: the host-side argument
// checks and geometry, and the per-pixel sum, compiled for the host and the
// device alike. Shared by the upfirdn2d kernels (upfirdn2d.cpp, upfirdn2d.cu)
// and the fused bias + upsampling + leaky ReLU kernels of filtered_lrelu
// (filtered_lrelu.cpp, filtered_lrelu.cu), so that the CPU kernels, which the
// test suite runs everywhere, test the arithmetic of the CUDA ones.
//
// Output pixel (oy, ox) is the correlation of the padded, upsampled image u
// with the filter k, starting at u's sample (oy * down_y, ox * down_x):
//     y[oy, ox] = gain * sum_{ty, tx} k[ty, tx] u[oy * down_y + ty, ox * down_x + tx],
// where u[j, i] = x[(j - pad_y0) / up_y, (i - pad_x0) / up_x] when both
// divisions are exact and land inside x, and 0 otherwise (inserted zeros,
// padding). k is the filter itself with flip_filter, else the filter flipped
// along both axes (convolution). Rather than visit all taps and test each, a
// pixel loops over the input samples its footprint covers, which skips the
// inserted zeros: (filter_h / up_y) * (filter_w / up_x) taps per pixel.

#pragma once

#include <ATen/core/Tensor.h>
#include <ATen/ops/empty.h>
#include <c10/util/Exception.h>
#include <climits>
#include <cstdint>
#include <type_traits>

#ifdef __CUDACC__
#define UPFIRDN2D_HD __host__ __device__ __forceinline__
#else
#include <ATen/Parallel.h>
#define UPFIRDN2D_HD inline
#endif

namespace upfirdn2d {

//------------------------------------------------------------------------
// Host side.

// Everything a pass needs, in 32-bit integers: the launchers check that the
// tensors have fewer than 2^31 elements, so dense offsets fit.
struct Geometry
{
    int batch, channels;
    int in_h, in_w;
    int out_h, out_w;
    int up_x, up_y, down_x, down_y;
    int pad_x0, pad_y0;         // Leading padding; the trailing padding only sets the output size.
    int filter_w, filter_h;
    bool flip;                  // Correlate with the filter as given (else convolve).
    double gain;                // Double, so that float64 passes scale exactly.
    int stride_n, stride_c, stride_y, stride_x; // Of the input, in elements.
    bool channels_last;         // Output memory order: [n, y, x, c] rather than [n, c, y, x].
};

// The memory format a kernel runs x in: x must be dense in one of the two.
inline at::MemoryFormat dense_format(const at::Tensor& x, const char* op)
{
    if (x.is_contiguous())
        return at::MemoryFormat::Contiguous;
    TORCH_CHECK(x.is_contiguous(at::MemoryFormat::ChannelsLast), op, ": x must be contiguous or channels_last");
    return at::MemoryFormat::ChannelsLast;
}

// Checks the arguments of a pass of input x and float32 filter f, and
// returns its geometry. `op` names the calling op in error messages.
inline Geometry make_geometry(const at::Tensor& x, const at::Tensor& f, int64_t up_x, int64_t up_y, int64_t down_x,
    int64_t down_y, int64_t pad_x0, int64_t pad_x1, int64_t pad_y0, int64_t pad_y1, bool flip, double gain, const char* op)
{
    TORCH_CHECK(x.dim() == 4, op, ": x must be [batch_size, num_channels, height, width]");
    TORCH_CHECK(f.dim() == 2 && f.scalar_type() == at::kFloat && f.is_contiguous(), op, ": f must be a contiguous 2D float32 tensor");
    TORCH_CHECK(f.device() == x.device(), op, ": f must be on the device of x");
    TORCH_CHECK(f.numel() > 0, op, ": f must not be empty");
    TORCH_CHECK(up_x >= 1 && up_y >= 1 && down_x >= 1 && down_y >= 1, op, ": up and down must be at least 1");
    TORCH_CHECK(x.numel() <= INT_MAX, op, ": x must have fewer than 2^31 elements");

    const at::MemoryFormat format = dense_format(x, op);
    const int64_t padded_w = x.size(3) * up_x + pad_x0 + pad_x1;
    const int64_t padded_h = x.size(2) * up_y + pad_y0 + pad_y1;
    TORCH_CHECK(padded_w >= f.size(1) && padded_h >= f.size(0), op, ": the padded, upsampled image is smaller than the filter");
    TORCH_CHECK(padded_w <= INT_MAX && padded_h <= INT_MAX, op, ": the padded, upsampled image is too large");
    const int64_t out_w = (padded_w - f.size(1)) / down_x + 1;
    const int64_t out_h = (padded_h - f.size(0)) / down_y + 1;
    TORCH_CHECK(x.size(0) * x.size(1) * out_h * out_w <= INT_MAX, op, ": the output must have fewer than 2^31 elements");

    Geometry g;
    g.batch = (int)x.size(0);
    g.channels = (int)x.size(1);
    g.in_h = (int)x.size(2);
    g.in_w = (int)x.size(3);
    g.out_h = (int)out_h;
    g.out_w = (int)out_w;
    g.up_x = (int)up_x;
    g.up_y = (int)up_y;
    g.down_x = (int)down_x;
    g.down_y = (int)down_y;
    g.pad_x0 = (int)pad_x0;
    g.pad_y0 = (int)pad_y0;
    g.filter_w = (int)f.size(1);
    g.filter_h = (int)f.size(0);
    g.flip = flip;
    g.gain = gain;
    g.stride_n = (int)x.stride(0);
    g.stride_c = (int)x.stride(1);
    g.stride_y = (int)x.stride(2);
    g.stride_x = (int)x.stride(3);
    g.channels_last = (format == at::MemoryFormat::ChannelsLast);
    return g;
}

// The output of a pass: the geometry's size, in the memory format of x.
inline at::Tensor empty_output(const Geometry& g, const at::Tensor& x)
{
    auto format = g.channels_last ? at::MemoryFormat::ChannelsLast : at::MemoryFormat::Contiguous;
    return at::empty({g.batch, g.channels, g.out_h, g.out_w}, x.options(), format);
}

inline int64_t output_size(const Geometry& g)
{
    return (int64_t)g.batch * g.channels * g.out_h * g.out_w;
}

//------------------------------------------------------------------------
// Per pixel, on the host and the device.

// Arithmetic type for a stored type: half precision sums in float.
template <class T> using acc_t = typename std::conditional<std::is_same<T, double>::value, double, float>::type;

// floor(a / b) for b > 0: C++ division truncates towards zero.
UPFIRDN2D_HD int floor_div(int a, int b)
{
    return (a >= 0 ? a : a - b + 1) / b;
}

// i clamped to [0, n]: the device's min and max are not the host's.
UPFIRDN2D_HD int clamp_index(int i, int n)
{
    return i < 0 ? 0 : (i > n ? n : i);
}

struct Pixel { int n, c, y, x; };

// The output pixel at offset i of the dense output, in its memory order.
// Consecutive CUDA threads take consecutive offsets, so that writes coalesce.
UPFIRDN2D_HD Pixel output_pixel(const Geometry& g, uint32_t i)
{
    Pixel p;
    if (g.channels_last)
    {
        p.c = i % g.channels; i /= g.channels;
        p.x = i % g.out_w; i /= g.out_w;
        p.y = i % g.out_h; i /= g.out_h;
    }
    else
    {
        p.x = i % g.out_w; i /= g.out_w;
        p.y = i % g.out_h; i /= g.out_h;
        p.c = i % g.channels; i /= g.channels;
    }
    p.n = i;
    return p;
}

// The filtered value of output pixel p, before any activation: load(offset)
// reads the input sample at that element offset (callers add a bias there,
// for instance), in the arithmetic type S.
template <class S, class Load>
UPFIRDN2D_HD S fir_pixel(const Geometry& g, const float* __restrict__ f, const Pixel& p, Load load)
{
    // Position in the upsampled image (before padding) of the first tap; input
    // sample i sits at i * up there. The loops run over the samples whose
    // positions fall within the filter's footprint and inside the image.
    const int y0 = p.y * g.down_y - g.pad_y0;
    const int x0 = p.x * g.down_x - g.pad_x0;
    const int iy_begin = clamp_index(floor_div(y0 + g.up_y - 1, g.up_y), g.in_h);
    const int iy_end = clamp_index(floor_div(y0 + g.filter_h - 1, g.up_y) + 1, g.in_h);
    const int ix_begin = clamp_index(floor_div(x0 + g.up_x - 1, g.up_x), g.in_w);
    const int ix_end = clamp_index(floor_div(x0 + g.filter_w - 1, g.up_x) + 1, g.in_w);

    const int base = p.n * g.stride_n + p.c * g.stride_c;
    S sum = S(0);
    for (int iy = iy_begin; iy < iy_end; iy++)
    {
        const int ty = iy * g.up_y - y0; // Tap row of the correlation, 0 .. filter_h - 1.
        const float* row = f + (g.flip ? ty : g.filter_h - 1 - ty) * g.filter_w;
        for (int ix = ix_begin; ix < ix_end; ix++)
        {
            const int tx = ix * g.up_x - x0;
            sum += S(row[g.flip ? tx : g.filter_w - 1 - tx]) * load(base + iy * g.stride_y + ix * g.stride_x);
        }
    }
    return sum * S(g.gain);
}

//------------------------------------------------------------------------
// Launch shapes: one CUDA thread, or one iteration of a CPU loop, per output element.

#ifdef __CUDACC__

constexpr int kBlockSize = 256;

inline int num_blocks(int64_t size)
{
    return (int)((size + kBlockSize - 1) / kBlockSize);
}

#else

// Calls pixel(i, p) for every output element, offset i in memory order,
// pixel p, split among threads in chunks of roughly kGrainTaps filter taps:
// small images are not worth waking threads for.
template <class Fn> void for_each_pixel(const Geometry& g, Fn pixel)
{
    constexpr int64_t kGrainTaps = 1 << 16;
    const int64_t taps = ((g.filter_h + g.up_y - 1) / g.up_y) * ((g.filter_w + g.up_x - 1) / g.up_x);
    at::parallel_for(0, output_size(g), (kGrainTaps + taps - 1) / taps, [&](int64_t begin, int64_t end)
    {
        for (int64_t i = begin; i < end; i++)
            pixel(i, output_pixel(g, (uint32_t)i));
    });
}

#endif

} // namespace upfirdn2d

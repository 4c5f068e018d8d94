// The per-pixel stage of the bi-line (CREPS) synthesis network, fused on the CPU.
//
// A pixel of a bi-line network is a function of its row's and its column's line features
// alone: per feature level, the outer product over the rank of the two lines, then a chain
// of small per-pixel fully connected layers (the decoders, the RGB projection and the two
// final modulated blocks). Run layer by layer, each of those layers streams every pixel's
// activations through memory and runs as a matrix product whose inner dimension (32-128)
// is too small for BLAS to reach the CPU's arithmetic rate. Here a block of BLOCK pixels of
// one row goes through the whole chain in buffers that stay in the L1 cache, each layer a
// register-blocked product, so that the stage is bound by arithmetic, not memory.
//
// What runs is a program of steps that torch_utils/ops/biline_pixels.py builds from the
// network, over a few channel-major buffers [channels][BLOCK]:
//   OUTER  level -> dst      dst (+)= sum over r of rows[level][c][r] * cols[level][r][c][pixel]
//   DENSE  layer, src -> dst dst (+)= clamp(act(W src + b) * gain)   (act: linear or leaky ReLU 0.2)
// Buffer IMAGE_BUFFER holds the output pixels. Layers have their weight either shared
// [1, O, I] or per sample [N, O, I] (the modulated, demodulated layers, prepared once per image).
//
// Float sums run in another order than the layer-by-layer reference (torch.matmul), so the
// results agree to rounding (the op's self-check and tests bound it).

#include <ATen/Parallel.h>
#include <ATen/ops/constant_pad_nd.h>
#include <ATen/ops/empty.h>
#include <torch/library.h>
#include <algorithm>
#include <cstdint>
#include <vector>
#include "biline_pixels.h"

namespace biline_pixels {

// Pixels per block, as vectors of VECTOR floats (GCC/Clang vector extensions, compiled for
// the instruction set of this build: custom_ops.cpu_simd_flags()). Rows per register block:
// enough independent accumulators to hide the FMA latency, few enough to stay in the 16
// (AVX2) or 32 (AVX-512) vector registers with the block's input vectors.
#ifdef __AVX512F__
constexpr int VECTOR = 16;
constexpr int ROWS = 8;
#elif defined(__AVX__)
constexpr int VECTOR = 8;
constexpr int ROWS = 6;
#else
constexpr int VECTOR = 4;
constexpr int ROWS = 4;
#endif
constexpr int VECTORS = 2;
constexpr int BLOCK = VECTOR * VECTORS;
typedef float Vec __attribute__((vector_size(VECTOR * sizeof(float)), aligned(sizeof(float)), may_alias));

struct Layer
{
    const float* weight;    // [O, I] of sample 0.
    int64_t sample_stride;  // 0 for a shared weight.
    const float* bias;      // [O].
    int out, in;
    float gain, clamp;      // clamp < 0: none.
};

static inline Vec load(const float* p) { return *reinterpret_cast<const Vec*>(p); }
static inline void store(float* p, Vec v) { *reinterpret_cast<Vec*>(p) = v; }

static inline Vec activate(Vec v, bool lrelu, float gain, float clamp)
{
    if (lrelu)
        v = v > 0 ? v : v * 0.2f;
    v *= gain;
    if (clamp >= 0)
    {
        v = v < clamp ? v : clamp;
        v = v > -clamp ? v : -clamp;
    }
    return v;
}

// y[o][p] (+)= activate(sum_i w[o][i] * x[i][p] + b[o]) for COUNT rows o starting at w.
template <int COUNT>
static inline void dense_rows(const float* w, int in, const float* bias, const float* x, float* y,
    bool accumulate, bool lrelu, float gain, float clamp)
{
    Vec acc[COUNT][VECTORS];
    for (int k = 0; k < COUNT; k++)
        for (int v = 0; v < VECTORS; v++)
            acc[k][v] = Vec{} + bias[k];
    for (int i = 0; i < in; i++)
    {
        Vec xi[VECTORS];
        for (int v = 0; v < VECTORS; v++)
            xi[v] = load(x + i * BLOCK + v * VECTOR);
        for (int k = 0; k < COUNT; k++)
        {
            const float a = w[k * in + i];
            for (int v = 0; v < VECTORS; v++)
                acc[k][v] += a * xi[v];
        }
    }
    for (int k = 0; k < COUNT; k++)
        for (int v = 0; v < VECTORS; v++)
        {
            float* out = y + k * BLOCK + v * VECTOR;
            const Vec value = activate(acc[k][v], lrelu, gain, clamp);
            store(out, accumulate ? load(out) + value : value);
        }
}

static void dense(const Layer& layer, int64_t n, const float* x, float* y, bool accumulate, bool lrelu)
{
    const float* w = layer.weight + n * layer.sample_stride;
    int o = 0;
    for (; o + ROWS <= layer.out; o += ROWS)
        dense_rows<ROWS>(w + o * layer.in, layer.in, layer.bias + o, x, y + o * BLOCK, accumulate, lrelu, layer.gain, layer.clamp);
    for (; o + 2 <= layer.out; o += 2)
        dense_rows<2>(w + o * layer.in, layer.in, layer.bias + o, x, y + o * BLOCK, accumulate, lrelu, layer.gain, layer.clamp);
    for (; o < layer.out; o++)
        dense_rows<1>(w + o * layer.in, layer.in, layer.bias + o, x, y + o * BLOCK, accumulate, lrelu, layer.gain, layer.clamp);
}

// dst[c][p] (+)= sum_r row[c][r] * col[r][c][p], col pointing at the block's first pixel.
static void outer(const float* row, const float* col, int64_t col_stride, int channels, int rank, float* dst, bool accumulate)
{
    for (int c = 0; c < channels; c++)
    {
        Vec acc[VECTORS] = {};
        for (int r = 0; r < rank; r++)
        {
            const float a = row[c * rank + r];
            const float* b = col + (r * channels + c) * col_stride;
            for (int v = 0; v < VECTORS; v++)
                acc[v] += a * load(b + v * VECTOR);
        }
        for (int v = 0; v < VECTORS; v++)
        {
            float* out = dst + c * BLOCK + v * VECTOR;
            store(out, accumulate ? load(out) + acc[v] : acc[v]);
        }
    }
}

// The op on CPU tensors, float32: the image [N, img_channels, H, W] (see prepare() for the arguments).
at::Tensor pixels_cpu(const at::Tensor& rows, const at::Tensor& cols, at::TensorList weights, at::TensorList biases,
    at::IntArrayRef steps, at::ArrayRef<double> gains, at::ArrayRef<double> clamps, int64_t img_channels)
{
    TORCH_CHECK(rows.scalar_type() == at::kFloat, "biline_pixels: the CPU kernel takes float32");
    const Args a = prepare(rows, cols, weights, biases, steps, gains, clamps, img_channels);
    const int64_t batch = a.batch, height = a.height, channels = a.channels, rank = a.rank, width = a.width;
    std::vector<Layer> layers;
    for (const LayerArgs& layer : a.layers)
        layers.push_back({layer.weight.data_ptr<float>(), layer.weight.size(0) == 1 ? 0 : layer.out * layer.in, layer.bias.data_ptr<float>(),
            (int)layer.out, (int)layer.in, layer.gain, layer.clamp});
    const std::vector<Step>& program = a.program;

    // Columns padded to whole blocks, so that every block reads BLOCK pixels.
    const int64_t blocks_per_row = (width + BLOCK - 1) / BLOCK;
    const int64_t padded_width = blocks_per_row * BLOCK;
    const at::Tensor padded = at::constant_pad_nd(cols, {0, padded_width - width}).contiguous();
    at::Tensor img = at::empty({batch, img_channels, height, width}, rows.options());
    const float* row_data = rows.data_ptr<float>();
    const float* col_data = padded.data_ptr<float>();
    float* img_data = img.data_ptr<float>();
    const int64_t scratch_size = a.offset[NUM_BUFFERS] * BLOCK;

    at::parallel_for(0, batch * height * blocks_per_row, 1, [&](int64_t begin, int64_t end)
    {
        std::vector<float> scratch(scratch_size);
        for (int64_t item = begin; item < end; item++)
        {
            const int64_t n = item / (height * blocks_per_row);
            const int64_t i = item / blocks_per_row % height;
            const int64_t j0 = item % blocks_per_row * BLOCK;
            for (const Step& step : program)
            {
                float* dst = scratch.data() + a.offset[step.dst] * BLOCK;
                if (step.kind == OUTER)
                {
                    const float* row = row_data + (((step.index * batch + n) * height + i) * channels) * rank;
                    const float* col = col_data + ((step.index * batch + n) * rank * channels) * padded_width + j0;
                    outer(row, col, padded_width, (int)channels, (int)rank, dst, step.accumulate);
                }
                else
                    dense(layers[step.index], n, scratch.data() + a.offset[step.src] * BLOCK, dst, step.accumulate, step.lrelu);
            }
            const float* out = scratch.data() + a.offset[IMAGE_BUFFER] * BLOCK;
            const int64_t count = std::min<int64_t>(BLOCK, width - j0);
            for (int64_t c = 0; c < img_channels; c++)
                std::copy(out + c * BLOCK, out + c * BLOCK + count, img_data + ((n * img_channels + c) * height + i) * width + j0);
        }
    });
    return img;
}

} // namespace biline_pixels

//------------------------------------------------------------------------

TORCH_LIBRARY(TORCH_EXTENSION_NAME, m)
{
    m.def("pixels(Tensor rows, Tensor cols, Tensor[] weights, Tensor[] biases, int[] steps, float[] gains, float[] clamps, int img_channels) -> Tensor");
}

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CPU, m)
{
    m.impl("pixels", &biline_pixels::pixels_cpu);
}

// CUDA kernel of the biline_pixels op (see biline_pixels.cpp for the program it runs), registered
// for the op that biline_pixels.cpp defines. One thread block takes TILE pixels of one row of one
// sample through the whole program in shared memory: buffers [channels][TILE] in float32, lines,
// weights and biases read in their own dtype (float32, float16 or bfloat16), every sum in float32.
// A warp's lanes take consecutive pixels (conflict-free shared memory), its warps a share of a
// layer's outputs, each weight a broadcast read shared by the warp.

#include <ATen/Dispatch.h>
#include <ATen/ops/empty.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>
#include "biline_pixels.h"

namespace biline_pixels {

constexpr int TILE = 32;            // Pixels per thread block: a warp's lanes.
constexpr int WARPS = 4;            // Each takes every WARPS-th output channel.
constexpr int OUTPUTS = 4;          // Output channels a thread sums at once, sharing its input reads.
constexpr int MAX_LAYERS = 64;

template <class T> struct LayerPtrs
{
    const T* weight[MAX_LAYERS];
    const T* bias[MAX_LAYERS];
    int64_t sample_stride[MAX_LAYERS];
    int out[MAX_LAYERS], in[MAX_LAYERS];
    float gain[MAX_LAYERS], clamp[MAX_LAYERS];
};

struct StepArgs { int kind, index, src, dst, accumulate, lrelu; };
constexpr int MAX_STEPS = 128;
struct Program { StepArgs steps[MAX_STEPS]; int num_steps; int offset[NUM_BUFFERS + 1]; };

__device__ __forceinline__ float activate(float v, bool lrelu, float gain, float clamp)
{
    if (lrelu)
        v = v > 0 ? v : v * 0.2f;
    v *= gain;
    if (clamp >= 0)
        v = fminf(fmaxf(v, -clamp), clamp);
    return v;
}

template <class T>
__global__ void pixels_kernel(const T* rows, const T* cols, const __grid_constant__ LayerPtrs<T> layers, const __grid_constant__ Program program,
    float* img, int batch, int height, int width, int channels, int rank, int img_channels, int tiles_per_row)
{
    extern __shared__ float buffers[]; // Buffer b: [program.offset[b + 1] - program.offset[b]][TILE].
    const int lane = threadIdx.x % TILE, warp = threadIdx.x / TILE;
    const int64_t item = blockIdx.x;
    const int n = (int)(item / ((int64_t)height * tiles_per_row));
    const int i = (int)(item / tiles_per_row % height);
    const int j = min((int)(item % tiles_per_row) * TILE + lane, width - 1); // Pixels past the edge repeat the last one, unwritten.

    for (int s = 0; s < program.num_steps; s++)
    {
        const StepArgs step = program.steps[s];
        float* dst = buffers + program.offset[step.dst] * TILE;
        if (step.kind == OUTER)
        {
            const int64_t level = (int64_t)step.index * batch + n;
            const T* row = rows + ((level * height + i) * channels) * rank;
            const T* col = cols + (level * rank * channels) * width + j;
            for (int c = warp; c < channels; c += WARPS)
            {
                float acc = 0;
                for (int r = 0; r < rank; r++)
                    acc += (float)row[c * rank + r] * (float)col[((int64_t)r * channels + c) * width];
                dst[c * TILE + lane] = step.accumulate ? dst[c * TILE + lane] + acc : acc;
            }
        }
        else
        {
            const int k = step.index, in = layers.in[k], out = layers.out[k];
            const T* w = layers.weight[k] + n * layers.sample_stride[k];
            const float* x = buffers + program.offset[step.src] * TILE;
            for (int o0 = warp * OUTPUTS; o0 < out; o0 += WARPS * OUTPUTS)
            {
                float acc[OUTPUTS];
                #pragma unroll
                for (int u = 0; u < OUTPUTS; u++)
                    acc[u] = o0 + u < out ? (float)layers.bias[k][o0 + u] : 0.f;
                for (int c = 0; c < in; c++)
                {
                    const float xc = x[c * TILE + lane];
                    #pragma unroll
                    for (int u = 0; u < OUTPUTS; u++)
                        if (o0 + u < out)
                            acc[u] += (float)w[(o0 + u) * in + c] * xc;
                }
                #pragma unroll
                for (int u = 0; u < OUTPUTS; u++)
                    if (o0 + u < out)
                    {
                        const float v = activate(acc[u], step.lrelu, layers.gain[k], layers.clamp[k]);
                        float* y = dst + (o0 + u) * TILE + lane;
                        *y = step.accumulate ? *y + v : v;
                    }
            }
        }
        __syncthreads();
    }
    const int j0 = (int)(item % tiles_per_row) * TILE;
    if (j0 + lane < width)
        for (int c = warp; c < img_channels; c += WARPS)
            img[(((int64_t)n * img_channels + c) * height + i) * width + j0 + lane] = buffers[(program.offset[IMAGE_BUFFER] + c) * TILE + lane];
}

at::Tensor pixels_cuda(const at::Tensor& rows, const at::Tensor& cols, at::TensorList weights, at::TensorList biases,
    at::IntArrayRef steps, at::ArrayRef<double> gains, at::ArrayRef<double> clamps, int64_t img_channels)
{
    const c10::cuda::OptionalCUDAGuard device_guard(rows.device());
    const Args a = prepare(rows, cols, weights, biases, steps, gains, clamps, img_channels);
    TORCH_CHECK((int64_t)a.layers.size() <= MAX_LAYERS && (int64_t)a.program.size() <= MAX_STEPS,
        "biline_pixels: the CUDA kernel takes at most ", MAX_LAYERS, " layers and ", MAX_STEPS, " steps");
    TORCH_CHECK(a.width > 0 && a.height > 0 && a.batch > 0, "biline_pixels: an empty image");
    const at::Tensor cols_contiguous = cols.contiguous();
    at::Tensor img = at::empty({a.batch, img_channels, a.height, a.width}, rows.options().dtype(at::kFloat));
    Program program{};
    program.num_steps = (int)a.program.size();
    for (size_t s = 0; s < a.program.size(); s++)
    {
        const Step& step = a.program[s];
        program.steps[s] = {(int)step.kind, (int)step.index, (int)step.src, (int)step.dst, (int)step.accumulate, (int)step.lrelu};
    }
    const int tiles_per_row = (int)((a.width + TILE - 1) / TILE);
    const int64_t num_blocks = a.batch * a.height * tiles_per_row;
    for (int b = 0; b <= NUM_BUFFERS; b++)
        program.offset[b] = (int)a.offset[b];
    const size_t shared_bytes = (size_t)a.offset[NUM_BUFFERS] * TILE * sizeof(float);
    AT_DISPATCH_FLOATING_TYPES_AND2(at::kHalf, at::kBFloat16, rows.scalar_type(), "biline_pixels_cuda", [&]
    {
        LayerPtrs<scalar_t> ptrs{};
        for (size_t k = 0; k < a.layers.size(); k++)
        {
            const LayerArgs& layer = a.layers[k];
            ptrs.weight[k] = layer.weight.data_ptr<scalar_t>();
            ptrs.bias[k] = layer.bias.data_ptr<scalar_t>();
            ptrs.sample_stride[k] = layer.weight.size(0) == 1 ? 0 : layer.out * layer.in;
            ptrs.out[k] = (int)layer.out;
            ptrs.in[k] = (int)layer.in;
            ptrs.gain[k] = layer.gain;
            ptrs.clamp[k] = layer.clamp;
        }
        auto kernel = pixels_kernel<scalar_t>;
        C10_CUDA_CHECK(cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)shared_bytes));
        kernel<<<(unsigned)num_blocks, TILE * WARPS, shared_bytes, c10::cuda::getCurrentCUDAStream()>>>(
            rows.data_ptr<scalar_t>(), cols_contiguous.data_ptr<scalar_t>(), ptrs, program, img.data_ptr<float>(),
            (int)a.batch, (int)a.height, (int)a.width, (int)a.channels, (int)a.rank, (int)img_channels, tiles_per_row);
        C10_CUDA_KERNEL_LAUNCH_CHECK();
    });
    return img;
}

} // namespace biline_pixels

//------------------------------------------------------------------------

TORCH_LIBRARY_IMPL(TORCH_EXTENSION_NAME, CUDA, m)
{
    m.impl("pixels", &biline_pixels::pixels_cuda);
}

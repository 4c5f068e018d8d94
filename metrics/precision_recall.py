"""Precision and recall (PR) of "Improved Precision and Recall Metric for
Assessing Generative Models" (Kynkaanniemi et al., 2019), computed as in
StyleGAN3's `pr50k3_full`.

Each set of VGG16 features spans a manifold: the union of the balls around its
points whose radius is the distance to the point's k-th nearest neighbour in
the same set. Precision is the fraction of generated points that fall inside
the manifold of the real points; recall is the fraction of real points inside
the manifold of the generated points.

With 50k points per set the full distance matrix (50k x 50k) does not fit in
memory, so distances are computed a block of rows at a time against column
batches, and the column batches are split between the processes. Only rank 0
assembles the result; the other ranks return NaN.

The math lives in `compute_distances` and `precision_recall_from_features`,
which take feature tensors; `compute_pr` gathers the features with
metric_utils and calls them.
"""

import torch

from . import metric_utils

#----------------------------------------------------------------------------

def _cdist(a, b):
    """Euclidean distances [M, N] between the rows of a [M, F] and b [N, F], in their dtype."""
    if a.dtype == torch.float16 and a.device.type == 'cpu':
        # The CPU has no float16 kernel for small inputs: compute in float32, round the result.
        return _cdist(a.to(torch.float32), b.to(torch.float32)).to(torch.float16)
    return torch.cdist(a.unsqueeze(0), b.unsqueeze(0))[0] # The batched form, as the reference calls it.

def compute_distances(
    row_features,               # Tensor [num_rows, num_features]: the same on every process.
    col_features,               # Tensor [num_cols, num_features]: the same on every process.
    num_gpus        = 1,        # Number of processes sharing the work.
    rank            = 0,        # Rank of this process.
    col_batch_size  = 10000,    # Columns per batch; memory grows as num_rows x col_batch_size.
):
    """Euclidean distances [num_rows, num_cols] (on the CPU, in the dtype of the
    features) on rank 0, None on the other ranks. Every process must call it.

    The columns are cut into a number of equal batches that is a multiple of
    `num_gpus`; process r computes the batches r, r + num_gpus, ... and each
    round of `num_gpus` batches is broadcast from every process in turn, so that
    rank 0 receives them in column order. The columns are zero-padded to a whole
    number of batches and the padding is cut off at the end.
    """
    assert 0 <= rank < num_gpus
    assert row_features.ndim == 2 and col_features.ndim == 2 and row_features.shape[1] == col_features.shape[1]
    num_cols = col_features.shape[0]
    rounds = (num_cols - 1) // (col_batch_size * num_gpus) + 1 # Batches per process.
    num_batches = rounds * num_gpus
    padded = torch.nn.functional.pad(col_features, [0, 0, 0, -num_cols % num_batches])
    batches = padded.chunk(num_batches) # Equal sizes: the padded length is a multiple of num_batches.

    parts = []
    for batch in batches[rank :: num_gpus]:
        dist = _cdist(row_features, batch)
        for src in range(num_gpus):
            received = dist.clone()
            if num_gpus > 1:
                torch.distributed.broadcast(received, src=src)
            if rank == 0:
                parts.append(received.cpu()) # On the host: the assembled matrix is the large one.
    if rank != 0:
        return None
    return torch.cat(parts, dim=1)[:, :num_cols]

#----------------------------------------------------------------------------

def manifold_radii(features, nhood_size, row_batch_size, col_batch_size, num_gpus=1, rank=0):
    """For each point of `features` [N, F], the distance to its `nhood_size`-th
    nearest neighbour in the same set (the point itself, at distance 0, is the
    0-th): a CPU tensor [N] on rank 0, None on the other ranks."""
    if not 0 < nhood_size < features.shape[0]:
        raise metric_utils.MetricError(f'precision/recall: the neighbourhood size must be between 1 and the number of '
            f'points minus one ({features.shape[0] - 1}), got {nhood_size}')
    radii = []
    for rows in features.split(row_batch_size):
        dist = compute_distances(rows, features, num_gpus=num_gpus, rank=rank, col_batch_size=col_batch_size)
        if rank == 0:
            # kthvalue in float32 (half kernels are missing on some devices), stored back in the
            # distances' dtype so that the comparison in points_inside is made at one precision.
            radii.append(dist.to(torch.float32).kthvalue(nhood_size + 1, dim=1).values.to(dist.dtype))
    return torch.cat(radii) if rank == 0 else None

def points_inside(probes, features, radii, row_batch_size, col_batch_size, num_gpus=1, rank=0):
    """Whether each point of `probes` [M, F] lies within the radius of at least one
    point of `features` [N, F] (`radii` [N] as from manifold_radii): a CPU bool
    tensor [M] on rank 0, None on the other ranks."""
    inside = []
    for rows in probes.split(row_batch_size):
        dist = compute_distances(rows, features, num_gpus=num_gpus, rank=rank, col_batch_size=col_batch_size)
        if rank == 0:
            inside.append((dist <= radii.unsqueeze(0)).any(dim=1))
    return torch.cat(inside) if rank == 0 else None

def precision_recall_from_features(
    real_features,              # Tensor [num_real, num_features].
    gen_features,               # Tensor [num_gen, num_features].
    nhood_size      = 3,        # k of the k-nearest-neighbour radii.
    row_batch_size  = 10000,    # Rows of the distance matrix held at once.
    col_batch_size  = 10000,    # Columns computed at once by one process.
    num_gpus        = 1,        # Number of processes sharing the work (all must call this).
    rank            = 0,        # Rank of this process.
):
    """(precision, recall) as floats on rank 0, (NaN, NaN) on the other ranks.

    The distances are computed in the dtype of the features; compute_pr passes
    float16 features, as StyleGAN3 does, which halves the memory of the blocks.
    """
    results = dict()
    for name, manifold, probes in [('precision', real_features, gen_features), ('recall', gen_features, real_features)]:
        radii = manifold_radii(manifold, nhood_size, row_batch_size, col_batch_size, num_gpus=num_gpus, rank=rank)
        inside = points_inside(probes, manifold, radii, row_batch_size, col_batch_size, num_gpus=num_gpus, rank=rank)
        results[name] = float(inside.to(torch.float32).mean()) if rank == 0 else float('nan')
    return results['precision'], results['recall']

#----------------------------------------------------------------------------

def compute_pr(opts, max_real, num_gen, nhood_size, row_batch_size, col_batch_size):
    """Precision and recall of opts.G against up to `max_real` dataset images
    (None = all), with `num_gen` generated images, on VGG16 features."""
    # k nearest neighbours need k + 1 points in each set; found out before any work.
    what = f'precision/recall with {nhood_size} neighbours'
    metric_utils.check_real_images(opts, min_items=nhood_size + 1, max_items=max_real, what=what)
    if num_gen < nhood_size + 1:
        raise metric_utils.MetricError(f'{what} needs at least {nhood_size + 1} generated images, got {num_gen}')
    detector_url = metric_utils.vgg16_url()
    detector_kwargs = dict(return_features=True)

    real_stats, gen_stats = metric_utils.compute_feature_stats_for_dataset_and_generator(opts=opts, detector_url=detector_url,
        detector_kwargs=detector_kwargs, max_real=max_real, num_gen=num_gen, capture_all=True)
    real_features, gen_features = real_stats.get_all_torch(), gen_stats.get_all_torch()

    # Float16 as in StyleGAN3: the published figures were computed at this precision.
    real_features = real_features.to(torch.float16).to(opts.device)
    gen_features = gen_features.to(torch.float16).to(opts.device)
    return precision_recall_from_features(real_features, gen_features, nhood_size=nhood_size,
        row_batch_size=row_batch_size, col_batch_size=col_batch_size, num_gpus=opts.num_gpus, rank=opts.rank)

#----------------------------------------------------------------------------

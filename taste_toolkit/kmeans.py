"""Small deterministic k-means in torch (k-means++ init + Lloyd iterations).

Used to fit discrete target units (``mel_kmeans``) without any extra package.
Distances are computed in chunks with :func:`torch.cdist`, so memory stays
bounded by ``chunk_size x k`` whatever the number of points.

Example
-------
>>> import torch
>>> x = torch.cat([torch.randn(50, 2) - 10, torch.randn(50, 2) + 10])
>>> c = kmeans(x, 2, seed=0)
>>> sorted(assign(x, c).bincount().tolist())
[50, 50]
"""

import torch

from taste_toolkit.errors import InputError

#: Rows per distance chunk; 65536 x 256 float32 distances = 64 MB.
CHUNK_SIZE = 65536
#: k-means++ seeding looks at no more than this many points per cluster.
INIT_POINTS_PER_CLUSTER = 64


def _check_points(x, k=None):
    if not isinstance(x, torch.Tensor) or x.dim() != 2:
        raise InputError(f"k-means expects a 2-D tensor (N, D), got {getattr(x, 'shape', type(x))}.")
    if not torch.isfinite(x).all():
        raise InputError("k-means input contains NaN or inf; clean the features first.")
    if k is not None:
        if k < 1:
            raise InputError(f"k must be >= 1, got {k}.")
        if x.shape[0] < k:
            raise InputError(
                f"k-means needs at least k={k} points, got {x.shape[0]}; "
                "use more data or fewer clusters."
            )


def _nearest(x, centroids, chunk_size=CHUNK_SIZE):
    """Index ``(N,)`` and squared distance ``(N,)`` of the nearest centroid."""
    indices = torch.empty(x.shape[0], dtype=torch.long, device=x.device)
    sq_dist = torch.empty(x.shape[0], dtype=x.dtype, device=x.device)
    for start in range(0, x.shape[0], chunk_size):
        chunk = x[start : start + chunk_size]
        # The matrix-product form is ~6x faster than the direct one on CPU.
        dist = torch.cdist(chunk, centroids, compute_mode="use_mm_for_euclid_dist")
        best, idx = dist.min(dim=1)
        indices[start : start + chunk_size] = idx
        sq_dist[start : start + chunk_size] = best.square()
    return indices, sq_dist


def assign(x, centroids, chunk_size=CHUNK_SIZE):
    """Index of the nearest centroid of every point.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` points.
    centroids : torch.Tensor
        ``(K, D)`` centroids.
    chunk_size : int
        Points per :func:`torch.cdist` call (bounds memory to ``chunk_size x K``).

    Returns
    -------
    torch.Tensor
        ``(N,)`` long, values in ``[0, K)``. Ties go to the lowest index.
    """
    _check_points(x)
    if centroids.dim() != 2 or centroids.shape[1] != x.shape[1]:
        raise InputError(
            f"centroids must be (K, {x.shape[1]}) to match the points, got {tuple(centroids.shape)}."
        )
    if x.shape[0] == 0:
        return torch.zeros(0, dtype=torch.long, device=x.device)
    return _nearest(x, centroids.to(x.dtype), chunk_size)[0]


def _kmeans_pp(x, k, generator):
    """k-means++ seeding: each new centre drawn with probability ~ D(x)^2.

    Runs on at most ``INIT_POINTS_PER_CLUSTER * k`` points (a seeded random
    subset): seeding is ``O(k N D)`` and sequential, and a subset that large
    already covers every cluster the data can support.
    """
    n = x.shape[0]
    limit = INIT_POINTS_PER_CLUSTER * k
    if n > limit:
        x = x[torch.randperm(n, generator=generator)[:limit].to(x.device)]
        n = limit
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    min_sq = (x - x[first]).square().sum(dim=1)
    for _ in range(1, k):
        total = float(min_sq.sum())
        if total <= 0.0:
            # Fewer distinct points than k: every point is already a centre.
            # Draw uniformly so the remaining centres are still data points.
            idx = int(torch.randint(n, (1,), generator=generator))
        else:
            probs = (min_sq / total).double().cpu()
            idx = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(x[idx])
        new_sq = (x - x[idx]).square().sum(dim=1)  # one centre: cheaper than cdist
        min_sq = torch.minimum(min_sq, new_sq)
    return torch.stack(centroids)


def kmeans(x, k, iters=30, seed=0, chunk_size=CHUNK_SIZE):
    """Fit ``k`` centroids to ``x`` with k-means++ and Lloyd iterations.

    Seeding uses a random subset of at most ``64 * k`` points; the Lloyd
    iterations use all points.

    Deterministic for a given input, ``k``, ``iters`` and ``seed`` (random draws
    come from a seeded CPU :class:`torch.Generator`, not the global RNG). A
    cluster that becomes empty is re-seeded with the point farthest from its
    current centroid (one distinct point per empty cluster), so no centroid is
    wasted. Stops early when assignments no longer change.

    Arguments
    ---------
    x : torch.Tensor
        ``(N, D)`` float points, ``N >= k``.
    k : int
        Number of clusters.
    iters : int
        Maximum Lloyd iterations.
    seed : int
        Seed of the generator.
    chunk_size : int
        Points per distance chunk.

    Returns
    -------
    torch.Tensor
        ``(k, D)`` centroids, same dtype and device as ``x``.
    """
    _check_points(x, k)
    x = x.float() if not x.is_floating_point() else x
    generator = torch.Generator().manual_seed(int(seed))
    centroids = _kmeans_pp(x, k, generator)
    previous = None
    for _ in range(iters):
        labels, sq_dist = _nearest(x, centroids, chunk_size)
        if previous is not None and torch.equal(labels, previous):
            break
        previous = labels
        sums = torch.zeros_like(centroids).index_add_(0, labels, x)
        counts = torch.bincount(labels, minlength=k)
        empty = (counts == 0).nonzero().flatten()
        centroids = sums / counts.clamp(min=1).unsqueeze(1).to(x.dtype)
        if empty.numel():
            # Farthest points first; never reuse the same point twice.
            far = torch.argsort(sq_dist, descending=True, stable=True)[: empty.numel()]
            centroids[empty] = x[far]
            previous = None  # the re-seeding changes the partition: keep iterating
    return centroids

"""The last batch is padded to a small size, not to the full batch (issue 11.12)."""

import numpy as np

from featclust import images, samples
from featclust.embed import Embedder, padded_size


def test_padded_sizes_are_powers_of_two_up_to_the_batch():
    assert [padded_size(n, 16) for n in range(1, 17)] == [
        1,
        2,
        4,
        4,
        8,
        8,
        8,
        8,
        16,
        16,
        16,
        16,
        16,
        16,
        16,
        16,
    ]
    assert padded_size(64, 64) == 64 and padded_size(2, 64) == 2
    assert padded_size(5, 6) == 6  # never more than the batch
    assert len({padded_size(n, 256) for n in range(1, 257)}) == 9


def test_two_images_with_batch_64_run_as_a_batch_of_two(tmp_path):
    samples.make_image_set(tmp_path, n_per_family=1, families=("ring", "grid"))
    files, _ = images.scan(tmp_path)
    gray = np.stack([images.load(f)[0] for f in files])
    assert len(gray) == 2

    big = Embedder(weights="none", batch_size=64)
    model = big.build()
    shapes = []
    real = model.predict_on_batch

    def spy(x):
        shapes.append(tuple(np.shape(x)))
        return real(x)

    model.predict_on_batch = spy
    feats = big.embed(gray)
    assert shapes == [(2, 224, 224)]
    assert feats.shape == (2, big.dim)

    # Same rows as an unpadded run and as a run padded to 4 (3 images).
    np.testing.assert_allclose(
        feats, Embedder(weights="none", batch_size=2).embed(gray), rtol=1e-4, atol=1e-3
    )
    three = big.embed(np.concatenate([gray, gray[:1]]))
    assert shapes[-1] == (4, 224, 224)
    np.testing.assert_allclose(three[:2], feats, rtol=1e-4, atol=1e-3)

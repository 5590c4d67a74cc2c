"""ImageClusterer.similar (issue 13) and the estimator's progress parameter (issue 12).

End to end with real files and the real VGG16 (random weights): the
clustered images' features come from the store; queries go through it too.
"""

import shutil

import numpy as np
import pytest
import sklearn.base
from sklearn.exceptions import NotFittedError

import featclust
from featclust import ImageClusterer, UsageError
from featclust.pipeline import EmbedInputsResult
from featclust.similarity import SimilarResult


class Bars:
    """A progress-bar class that records what it is told (tqdm's interface, and the factory's)."""

    made = []

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs, self.n, self.closed = args, kwargs, 0, False
        Bars.made.append(self)

    def update(self, n=1):
        self.n += n

    def close(self):
        self.closed = True

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


@pytest.fixture(scope="module")
def fitted(two_families, tmp_path_factory):
    folder, truth = two_families
    store = tmp_path_factory.mktemp("store")
    Bars.made = []
    est = ImageClusterer(
        n_clusters=2, weights="none", store=store, batch_size=8, progress=Bars
    ).fit(folder)
    return est, folder, truth, store, list(Bars.made)


def test_progress_reaches_the_embedding(fitted):
    est, _, truth, _, bars = fitted
    assert est.get_params()["progress"] is Bars
    assert bars, "no progress bar was made while embedding"
    assert sum(b.n for b in bars) >= len(truth)
    assert all(b.closed for b in bars)


@pytest.mark.parametrize("progress", [True, False, None, Bars])
def test_progress_is_passed_to_the_pipeline_unchanged(monkeypatch, tmp_path, progress):
    seen = []

    def fake_embed_folder(image_dir, *, embedder=None, store=None, progress="missing", **kw):
        seen.append(("folder", progress))
        raise featclust.NoImagesError("stop here")

    def fake_embed_inputs(
        inputs, *, embedder=None, store=None, image_dir=None, progress="missing", **kw
    ):
        seen.append(("inputs", progress))
        return EmbedInputsResult([], np.zeros((0, 512), np.float32), [])

    monkeypatch.setattr(featclust.estimator, "embed_folder", fake_embed_folder)
    monkeypatch.setattr(featclust.estimator, "embed_inputs", fake_embed_inputs)
    est = ImageClusterer(weights="none", progress=progress)
    with pytest.raises(featclust.NoImagesError):
        est.fit(tmp_path)
    (tmp_path / "a.png").write_bytes(b"")
    with pytest.raises(featclust.NoImagesError):
        est.fit(tmp_path / "a.png")
    assert seen == [("folder", progress), ("inputs", progress)]


def test_similar_finds_each_clustered_image_itself_first(fitted):
    est, folder, truth, _, _ = fitted
    names = sorted(truth)
    found = est.similar([folder / names[0], folder / names[5]], top=4)
    assert isinstance(found, SimilarResult)
    assert found.queries == [str(folder / names[0]), str(folder / names[5])]
    assert [p[0] for p in found.paths] == [names[0], names[5]]
    assert found.indices.shape == found.similarities.shape == (2, 4)
    assert np.all(found.similarities[:, 0] == 1.0)
    assert np.all(np.diff(found.similarities, axis=1) <= 0)
    assert [est.paths_[i] for i in found.indices[1]] == found.paths[1]
    rows = list(found.rows())
    assert rows[0] == (str(folder / names[0]), names[0], 1.0, 1) and len(rows) == 8
    # the neighbours are the images of the same family (random weights separate these two)
    for q, paths in zip([names[0], names[5]], found.paths):
        assert {truth[p] for p in paths} == {truth[q]}


def test_similar_copy_elsewhere_finds_the_original(fitted, tmp_path):
    est, folder, truth, _, _ = fitted
    name = sorted(truth)[3]
    shutil.copy(folder / name, tmp_path / "copy.png")
    found = est.similar(tmp_path / "copy.png", top=100)
    assert found.paths[0][0] == name and found.similarities[0, 0] == 1.0
    assert found.similarities.shape == (1, len(truth))  # top capped at the clustered images


def test_similar_checks_top_and_fitting(fitted):
    est, folder, truth, _, _ = fitted
    with pytest.raises(UsageError, match="top=0"):
        est.similar(folder / sorted(truth)[0], top=0)
    with pytest.raises(NotFittedError):
        ImageClusterer(weights="none").similar(folder)


def test_similar_on_an_estimator_read_from_a_sorted_folder(fitted, tmp_path, embedder):
    _, folder, truth, store, _ = fitted
    out = tmp_path / "out"
    featclust.sort_folder(folder, out, n_clusters=2, embedder=embedder, store=store, report=False)
    est = ImageClusterer.from_output(out, progress=False)
    assert est.get_params()["progress"] is False
    before = dict(vars(est))
    names = sorted(truth)
    found = est.similar(folder / names[2], top=2)
    assert found.paths[0][0] == names[2] and found.similarities[0, 0] == 1.0
    # similar() leaves the estimator as it was: no paths_ or features_ set on it
    assert vars(est).keys() == before.keys()
    assert all(vars(est)[k] is v for k, v in before.items())
    again = est.similar(folder / names[4], top=1)
    assert again.paths == [[names[4]]]


def test_similar_leaves_a_fitted_estimator_alone(fitted):
    est, folder, truth, _, _ = fitted
    before = {k: v for k, v in vars(est).items() if k.endswith("_")}
    est.similar(folder / sorted(truth)[1], top=3)
    after = {k: v for k, v in vars(est).items() if k.endswith("_")}
    assert after.keys() == before.keys()
    assert all(after[k] is v for k, v in before.items())


def test_feature_names_out_name_every_feature(fitted):
    est, folder, truth, _, _ = fitted
    names = est.get_feature_names_out()
    assert len(names) == est.features_.shape[1] == est.embedder_.dim
    assert names[0] == "imageclusterer0" and len(set(names)) == len(names)
    assert est.set_output(transform="default") is est
    features = est.transform(folder / min(truth))
    assert isinstance(features, np.ndarray) and features.shape == (1, len(names))
    with pytest.raises(NotFittedError):
        ImageClusterer().get_feature_names_out()


def test_set_output_pandas_gives_named_columns(fitted):
    pd = pytest.importorskip("pandas")
    est, folder, _, _, _ = fitted
    frame = sklearn.base.clone(est).set_output(transform="pandas").fit_transform(folder)
    assert isinstance(frame, pd.DataFrame)
    assert list(frame.columns) == list(est.get_feature_names_out())

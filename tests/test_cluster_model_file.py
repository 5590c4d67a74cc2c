"""Damaged or tampered model.npz (issue 11.10).

One ModelMismatchError naming the file and the part, never a traceback.
"""

import io
import json

import numpy as np
import pytest

from featclust import FeatureKMeans, ModelMismatchError


@pytest.fixture(scope="module")
def saved():
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(c, 1, (40, 12)) for c in (0, 5, 10)]).astype(np.float32)
    model = FeatureKMeans(3, pca=4, random_state=1).fit(X)
    buf = io.BytesIO()
    model.save(buf, extra={"feature_settings": {"dim": 12}})
    with np.load(io.BytesIO(buf.getvalue())) as data:
        arrays = dict(data)
    return X, model, arrays


def meta_of(arrays):
    return json.loads(bytes(arrays["meta"]).decode())


def with_meta(arrays, meta):
    raw = meta if isinstance(meta, bytes) else json.dumps(meta).encode()
    return {**arrays, "meta": np.frombuffer(raw, dtype=np.uint8)}


def edit_meta(change):
    def edit(arrays):
        meta = meta_of(arrays)
        change(meta)
        return with_meta(arrays, meta)

    return edit


def set_param(name, value):
    return edit_meta(lambda m: m["params"].__setitem__(name, value))


def without(name):
    return lambda a: {k: v for k, v in a.items() if k != name}


def replace(name, value):
    return lambda a: {**a, name: value}


DAMAGE = {
    "unknown parameter": (set_param("n_clusterz", 3), "unknown parameters 'n_clusterz'"),
    "n_clusters not an integer": (set_param("n_clusters", 2.5), "n_clusters=2.5"),
    "n_clusters a string": (set_param("n_clusters", "3"), "n_clusters='3'"),
    "n_clusters negative": (set_param("n_clusters", -3), "n_clusters=-3"),
    "pca a list": (set_param("pca", [4]), r"pca=\[4\]"),
    "method unknown": (set_param("method", "dbscan"), "method='dbscan'"),
    "params a list": (
        edit_meta(lambda m: m.__setitem__("params", [3, 4])),
        "params must be a JSON object, got list",
    ),
    "extra a list": (
        edit_meta(lambda m: m.__setitem__("extra", [])),
        "extra must be a JSON object",
    ),
    "meta a list": (lambda a: with_meta(a, [1, 2]), "meta must be a JSON object, got list"),
    "meta not JSON": (lambda a: with_meta(a, b"{not json"), "meta is not JSON"),
    "meta not UTF-8": (lambda a: with_meta(a, b"\xff\xfe"), "meta is not JSON"),
    "meta float array": (replace("meta", np.zeros(3)), "meta must be JSON bytes"),
    "format other": (edit_meta(lambda m: m.__setitem__("format", 99)), "has format 99"),
    "n_features_in a string": (
        edit_meta(lambda m: m.__setitem__("n_features_in", "12")),
        "n_features_in='12'",
    ),
    "n_features_in wrong": (
        edit_meta(lambda m: m.__setitem__("n_features_in", 13)),
        "pca_mean must be a float array of shape",
    ),
    "centres missing": (without("cluster_centers"), "missing arrays cluster_centers"),
    "centres wrong shape": (
        replace("cluster_centers", np.zeros((3, 5), np.float32)),
        r"cluster_centers must be a float array of shape \(3, 4\)",
    ),
    "centres too few": (
        replace("cluster_centers", np.zeros((2, 4), np.float32)),
        r"cluster_centers must be a float array of shape \(3, 4\)",
    ),
    "centres text": (
        replace("cluster_centers", np.full((3, 4), "x")),
        "cluster_centers must be a float array",
    ),
    "centres NaN": (
        replace("cluster_centers", np.full((3, 4), np.nan, np.float32)),
        "cluster_centers holds NaN",
    ),
    "thresholds wrong shape": (
        replace("thresholds", np.zeros(5, np.float32)),
        r"thresholds must be a float array of shape \(3,\)",
    ),
    "thresholds negative": (
        replace("thresholds", -np.ones(3, np.float32)),
        "thresholds must not be negative",
    ),
    "pca arrays incomplete": (without("pca_scale"), "PCA arrays incomplete"),
    "pca arrays missing": (
        lambda a: {k: v for k, v in a.items() if not k.startswith("pca_")},
        "pca=4 but the file has no PCA arrays",
    ),
    "pca components wrong shape": (
        replace("pca_components", np.zeros((4, 7), np.float32)),
        r"pca_components must be a float array of shape \(4, 12\)",
    ),
    "pca components too many": (
        replace("pca_components", np.zeros((5, 12), np.float32)),
        r"pca_components has shape \(5, 12\); expected \(at most 4, 12\)",
    ),
    "pca components 1-D": (
        replace("pca_components", np.zeros(48, np.float32)),
        "pca_components has shape",
    ),
    "pca scale zero": (replace("pca_scale", np.zeros(4, np.float32)), "pca_scale must be positive"),
    "feature centres wrong shape": (
        replace("feature_centers", np.zeros((3, 5), np.float32)),
        r"feature_centers must be a float array of shape \(3, 12\)",
    ),
    "feature centres NaN": (
        replace("feature_centers", np.full((3, 12), np.nan, np.float32)),
        "feature_centers holds NaN",
    ),
    "feature centres without PCA": (
        lambda a: {k: v for k, v in a.items() if not k.startswith("pca_")},
        "feature_centers without PCA arrays|no PCA arrays",
    ),
    "unknown array": (replace("evil", np.zeros(2)), "unknown arrays evil"),
    "pickled array": (
        replace("thresholds", np.array([{"a": 1}, None, 3], dtype=object)),
        "pickled",
    ),
}


@pytest.mark.parametrize("case", list(DAMAGE))
def test_damaged_model_file_is_one_model_mismatch_error(tmp_path, saved, case):
    _, _, arrays = saved
    damage, message = DAMAGE[case]
    path = tmp_path / "model.npz"
    np.savez(path, **damage(dict(arrays)))
    with pytest.raises(ModelMismatchError, match=message) as info:
        FeatureKMeans.load(path)
    assert str(path) in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    "content, message",
    [
        (b"", "cannot read model file"),
        (b"not a zip", "holds pickled data"),
        (b"PK\x03\x04garbage" * 10, "cannot read model file"),
    ],
)
def test_unreadable_model_file_is_one_model_mismatch_error(tmp_path, content, message):
    path = tmp_path / "model.npz"
    path.write_bytes(content)
    with pytest.raises(ModelMismatchError, match=message):
        FeatureKMeans.load(path)


def test_intact_model_file_still_loads_and_predicts(tmp_path, saved):
    X, model, arrays = saved
    path = tmp_path / "model.npz"
    np.savez(path, **arrays)
    loaded, extra = FeatureKMeans.load(path)
    assert extra == {"feature_settings": {"dim": 12}}
    np.testing.assert_array_equal(loaded.predict(X), model.labels_)
    no_pca = FeatureKMeans(3, pca=None).fit(X)
    no_pca.save(path)
    np.testing.assert_array_equal(FeatureKMeans.load(path)[0].predict(X), no_pca.labels_)

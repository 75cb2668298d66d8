"""The user encoder graph computes pocketrank.shared.features' fold: same vector for the same events."""

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from pocketrank.exporter.onnx_export import export_encoder
from pocketrank.exporter.parity import check_encoder, encoder_inputs, session
from pocketrank.server.data import movielens
from pocketrank.server.home import Home
from pocketrank.server.training import model as model_io
from pocketrank.server.training.sequences import user_sequences
from pocketrank.shared.errors import ModelError
from pocketrank.shared.features import TYPE_WEIGHTS, fold_events, sequence_weights, user_vector

TYPES = list(TYPE_WEIGHTS)  # every event type, impressions (weight 0) included


@pytest.fixture(scope="module")
def real(trained_home, tmp_path_factory):
    home = Home(trained_home)
    m, _ = model_io.load(home.model_dir(home.current_model()))
    ml = movielens.load()
    seqs = user_sequences(ml.users, ml.items, ml.n_users)
    path = tmp_path_factory.mktemp("encoder") / "encoder.onnx"
    export_encoder(path, m.config.dim)
    return m.item_vectors().detach().numpy(), seqs, path


def test_matches_the_fold_on_real_sequences_with_every_event_type(real):
    vecs, seqs, path = real
    rng = np.random.default_rng(0)
    sess = session(path)
    longest = 0
    for u in range(len(seqs)):  # every MovieLens user, up to 737 events
        items = vecs[seqs[u]]
        types = [TYPES[i] for i in rng.integers(0, len(TYPES), len(items))]
        ref = user_vector(fold_events(zip(types, items), vecs.shape[1]))
        got = sess.run(None, encoder_inputs(items, types))[0]
        assert got.shape == (1, vecs.shape[1])
        np.testing.assert_allclose(got[0], ref, atol=1e-5, rtol=0)
        longest = max(longest, len(items))
    assert longest > 700


def test_the_event_axis_is_free_and_an_unweighted_history_gives_zeros(real):
    vecs, _, path = real
    sess = session(path)
    for n in (1, 2, 300):
        out = sess.run(None, {"items": vecs[:n], "weights": np.full(n, 0.5, np.float32)})[0]
        np.testing.assert_allclose(out[0], vecs[:n].mean(0), atol=1e-6)
    only_impressions = sess.run(None, {"items": vecs[:3], "weights": sequence_weights(["impression"] * 3)})[0]
    assert not only_impressions.any()  # as user_vector of a state with no weight
    nothing_moved = sess.run(None, encoder_inputs(vecs[:3], ["impression"] * 3))[0]  # zero events
    assert nothing_moved.shape == (1, vecs.shape[1]) and not nothing_moved.any()


def test_check_encoder_refuses_a_graph_that_is_not_the_fold(real, tmp_path):
    vecs, seqs, path = real
    sequences = [(vecs[seqs[u]], ["click"] * len(seqs[u])) for u in range(20)]
    report = check_encoder(path, sequences, vecs.shape[1])
    assert report["max_abs_diff_vs_fold"] <= 1e-5 and report["sequences"] == 20
    # same signature, but the plain mean: ignores decay and event types
    dim = vecs.shape[1]
    graph = helper.make_graph(
        [helper.make_node("ReduceMean", ["items", "axes"], ["user"], keepdims=1)], "mean",
        [helper.make_tensor_value_info("items", TensorProto.FLOAT, ["L", dim]),
         helper.make_tensor_value_info("weights", TensorProto.FLOAT, ["L"])],
        [helper.make_tensor_value_info("user", TensorProto.FLOAT, [1, dim])],
        [numpy_helper.from_array(np.array([0], np.int64), "axes")])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), str(tmp_path / "mean.onnx"))
    with pytest.raises(ModelError, match="encoder differs"):
        check_encoder(tmp_path / "mean.onnx", sequences, dim)

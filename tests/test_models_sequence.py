"""The zoo's attention and recurrent models (``vit_small``, ``lstm_rows``) trace through the
public API at two batch sizes, and every bound method is sound on them (random weights; a
smaller image keeps the test fast: 14x14 gives the ViT four 7x7 patches and the LSTM 14
steps)."""
import pytest
import torch

from models import get_model
from op_checks import check_sound, one_thread, op_kinds, traced  # noqa: F401


@pytest.mark.parametrize("name,methods", [
    ("vit_small", ("ibp", "crown-ibp", "crown")),
    ("lstm_rows", ("ibp", "crown-ibp")),
])
def test_sequence_model_traces_and_bounds_are_sound(name, methods):
    torch.manual_seed(0)
    model = get_model(name, in_size=14).eval()
    x = torch.rand(2, 1, 14, 14)
    bm = traced(model, x)
    kinds = set(op_kinds(bm))
    assert ({"matmul", "softmax", "center"} if name == "vit_small" else {"sigmoid", "tanh"}) \
        <= kinds
    check_sound(model, x, 0.01, methods=methods, n=16, lower=0.0, upper=1.0, bm=bm)


def test_text_transformer_is_bounded_over_a_ball_around_its_embedded_tokens():
    import boundgraph as bg
    from models.sequence import TextTransformer

    torch.manual_seed(0)
    model = TextTransformer(vocab=50, length=6, dim=8, depth=1, heads=2, mlp_dim=16).eval()
    tokens = torch.randint(0, 50, (2, 6))
    with torch.no_grad():
        embedded = model.embed(tokens)
    bm = traced(model.body, embedded)
    torch.testing.assert_close(bm(embedded), model(tokens))
    check_sound(model.body, embedded, 0.05, methods=("ibp", "crown-ibp", "crown"), n=16, bm=bm)
    with pytest.raises(bg.UnsupportedOpError, match="embedding lookup of input-dependent"):
        bg.BoundedModule(model, tokens)

"""Soundness on randomly generated sequence networks: attention (hand-written and
nn.MultiheadAttention, batch- and seq-first), LayerNorm/RMSNorm, LSTM/GRU (batch- and
seq-first, bidirectional), smooth functions, softmax over tokens, products, maxima, residual
adds and concatenations in random DAGs; random weights and briefly trained ones; every method's
bounds contain sampled, corner and PGD points of the input ball."""
import pytest
import torch

from op_checks import check_sound, one_thread, traced  # noqa: F401
from random_seq_nets import describe, random_seq_net

SEEDS = range(12)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_sequence_network_is_sound_for_every_method(seed):
    net = random_seq_net(seed)
    x = torch.randn(2, 4, 6, generator=torch.Generator().manual_seed(100 + seed))
    try:
        check_sound(net, x, 0.05, methods=("ibp", "crown-ibp", "crown"), n=16, bm=traced(net, x))
    except AssertionError as e:
        raise AssertionError(f"seed {seed}: {describe(net)}: {e}") from e


@pytest.mark.parametrize("seed", [0, 5])
def test_trained_random_sequence_network_stays_sound(seed):
    net = random_seq_net(seed).train()
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, 4, 6, generator=g)
    y = torch.randint(0, 3, (32,), generator=g)
    opt = torch.optim.Adam(net.parameters(), lr=0.02)
    for _ in range(30):  # weights far from their initialisation
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    check_sound(net, x[:2], 0.05, methods=("ibp", "crown-ibp", "crown"), n=16,
                bm=traced(net, x[:2]))

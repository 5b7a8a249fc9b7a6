"""generation.ReservedLayer: the dynamic cache's keys and values, written in place."""

import torch
from transformers import cache_utils

from unlearn.evaluation.generation import ReservedLayer, reserve


def _states(rows, length, seed):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, 2, length, 4, generator=g), torch.randn(rows, 2, length, 3, generator=g)


def test_reserved_layer_holds_what_the_dynamic_layer_holds():
    """Prompt states, then steps of one position (past the capacity: the buffers grow), then rows
    dropped: the same keys and values as transformers' layer at each point, the same length, and the
    steps written into the buffers in place while they have room."""
    plain = cache_utils.DynamicLayer()
    plain.update(*_states(5, 6, 0))
    layer = ReservedLayer(plain, capacity=8)
    assert layer.get_seq_length() == 6 and layer._keys.shape[-2] == 8
    for step in range(4):
        buffer = layer._keys
        got = layer.update(*_states(5, 1, step + 1))
        want = plain.update(*_states(5, 1, step + 1))
        assert all(torch.equal(a, b) for a, b in zip(got, want, strict=True))
        assert (layer._keys is buffer) == (step != 2)  # positions 7, 8 fit; 9 doubles the buffers to 16; 10 fits
        assert got[0].data_ptr() == layer._keys.data_ptr()
    assert layer._keys.shape[-2] == 16 and layer.get_seq_length() == plain.get_seq_length() == 10
    keep = torch.tensor([4, 1, 2])
    layer.batch_select_indices(keep)
    plain.batch_select_indices(keep)
    assert torch.equal(layer.keys, plain.keys) and torch.equal(layer.values, plain.values)
    layer.update(*_states(3, 1, 9))
    plain.update(*_states(3, 1, 9))
    assert torch.equal(layer.keys, plain.keys) and layer._keys.shape == (3, 2, 16, 4)


def test_reserve_replaces_only_plain_dynamic_layers():
    cache = cache_utils.DynamicCache()
    cache.update(*_states(2, 3, 0), layer_idx=0)
    cache.update(*_states(2, 3, 1), layer_idx=1)
    reserve(cache, 10)
    assert [type(x) for x in cache.layers] == [ReservedLayer, ReservedLayer]
    assert cache.get_seq_length() == 3
    keys, _ = cache.update(*_states(2, 1, 2), layer_idx=0)
    assert keys.shape == (2, 2, 4, 4)

    class Other:
        layers = [object()]

    other = Other()
    reserve(other, 10)
    assert type(other.layers[0]) is object

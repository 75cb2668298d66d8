"""The click model's first layer, kept as its user and item halves, is still the brief's concat layer."""

import torch
from torch import nn

from pocketrank.server.training.model import ClickModel, ModelConfig, Recommender


def test_forward_computes_the_user_half_once_and_equals_the_paired_training_path():
    torch.manual_seed(0)
    click = ClickModel(64, 128)
    user, items = torch.randn(1, 64), torch.randn(200, 64)
    with torch.no_grad():
        once = click(user, items)
        paired = torch.sigmoid(click.logits(user.expand(200, -1), items))
    assert once.shape == (200,)
    torch.testing.assert_close(once, paired, atol=1e-6, rtol=0)


def test_split_layer_equals_the_concatenated_one_it_replaced():
    torch.manual_seed(1)
    click = ClickModel(64, 128)
    first = nn.Linear(128, 128)
    with torch.no_grad():
        first.weight.copy_(torch.cat([click.user_proj.weight, click.item_proj.weight], 1))
        first.bias.copy_(click.user_proj.bias)
        u, p = torch.randn(32, 64), torch.randn(32, 64)
        concat = click.out(torch.relu(first(torch.cat([u, p], 1)))).squeeze(1) + click.dot_weight * (u * p).sum(1)
        torch.testing.assert_close(click.logits(u, p), concat, atol=1e-5, rtol=0)


def test_initial_weights_are_the_concat_layers_so_training_starts_where_it_did():
    torch.manual_seed(7)
    first, last = nn.Linear(128, 128), nn.Linear(128, 1)
    torch.manual_seed(7)
    click = ClickModel(64, 128)
    torch.testing.assert_close(click.user_proj.weight, first.weight[:, :64], rtol=0, atol=0)
    torch.testing.assert_close(click.item_proj.weight, first.weight[:, 64:], rtol=0, atol=0)
    torch.testing.assert_close(click.user_proj.bias, first.bias, rtol=0, atol=0)
    torch.testing.assert_close(click.out.weight, last.weight, rtol=0, atol=0)
    # and nothing more was drawn from the generator than the concat model drew
    torch.manual_seed(7)
    nn.Linear(128, 128), nn.Linear(128, 1)
    expected_next = torch.rand(1)
    torch.manual_seed(7)
    ClickModel(64, 128)
    assert torch.equal(torch.rand(1), expected_next)


def test_a_state_dict_saved_before_the_split_loads_and_scores_the_same():
    torch.manual_seed(3)
    model = Recommender(ModelConfig(n_items=10))
    c = model.click
    old = {k: v for k, v in model.state_dict().items() if not k.startswith("click.")}
    old.update({
        "click.mlp.0.weight": torch.cat([c.user_proj.weight, c.item_proj.weight], 1).detach().clone(),
        "click.mlp.0.bias": c.user_proj.bias.detach().clone(),
        "click.mlp.2.weight": c.out.weight.detach().clone(),
        "click.mlp.2.bias": c.out.bias.detach().clone(),
        "click.dot_weight": c.dot_weight.detach().clone(),
    })
    fresh = Recommender(ModelConfig(n_items=10))
    fresh.load_state_dict(old)  # strict: every key accounted for
    user, items = torch.randn(1, 64), torch.randn(5, 64)
    with torch.no_grad():
        torch.testing.assert_close(fresh.click(user, items), model.click(user, items), rtol=0, atol=0)

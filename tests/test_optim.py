import json
from pathlib import Path

import pytest
import torch

from attnlab.data.corpus import prepare_data
from attnlab.models import build_model, preset_config
from attnlab.training.optim import Float32Muon, MuonWithAdamW, make_optimizer, newton_schulz, split_params
from attnlab.training.train import TrainConfig, train


def test_newton_schulz_flattens_the_singular_values() -> None:
    torch.manual_seed(0)
    u_MM, _ = torch.linalg.qr(torch.randn(64, 64))
    v_NN, _ = torch.linalg.qr(torch.randn(16, 16))
    g_MN = u_MM[:, :16] @ torch.diag(torch.logspace(-1, 1, 16)) @ v_NN  # singular values 0.1 ... 10
    for g in (g_MN, g_MN.T):
        s = torch.linalg.svdvals(newton_schulz(g))
        assert s.min() > 0.6 and s.max() < 1.25, s  # a 100x spread squeezed to about 0.7-1.2


def test_float32_muon_matches_torch_muon() -> None:
    """The same update as torch.optim.Muon up to its bfloat16 Newton-Schulz rounding."""
    torch.manual_seed(0)
    ours = torch.nn.Parameter(torch.randn(64, 16))
    ref = torch.nn.Parameter(ours.detach().clone())
    start = ours.detach().clone()
    a = Float32Muon([ours], lr=0.01, weight_decay=0.1)
    b = torch.optim.Muon([ref], lr=0.01, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        g = torch.randn(64, 16)
        ours.grad, ref.grad = g.clone(), g.clone()
        a.step()
        b.step()
    moved = (ref - start).abs().max()
    assert moved > 0.01  # three steps of lr 0.01 x 0.2 sqrt(64) (entries of a 64 x 16 orthogonal matrix ~ 0.25)
    assert (ours - ref).abs().max() < 0.03 * moved  # bf16 keeps 8 bits of mantissa


def test_muon_takes_the_hidden_matrices_and_adamw_the_rest() -> None:
    model = build_model(preset_config("lab", n_layers=2))
    hidden, io, vectors = split_params(model)
    names = {id(p): n for n, p in model.named_parameters()}
    assert {names[id(p)] for p in io} == {"embed.tok.weight", "embed.pos.weight"}  # the LM head is tied
    assert all(names[id(p)].startswith("blocks.") and p.dim() == 2 for p in hidden) and len(hidden) == 12
    assert all(p.dim() == 1 for p in vectors)
    opt = make_optimizer(model, "muon", 1e-3, 0.1, (0.9, 0.99), "cpu")
    assert isinstance(opt, MuonWithAdamW) and isinstance(opt.parts[0], Float32Muon)
    assert sum(len(g["params"]) for g in opt.param_groups) == len(list(model.parameters()))


def test_muon_state_dict_numbers_parameters_across_both_halves() -> None:
    torch.manual_seed(0)
    model = build_model(preset_config("lab"))
    opt = make_optimizer(model, "muon", 1e-3, 0.1, (0.9, 0.99), "cpu")
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    opt.step()
    sd = opt.state_dict()
    n = len(list(model.parameters()))
    assert sorted(sd["state"]) == list(range(n))
    again = make_optimizer(model, "muon", 1e-3, 0.1, (0.9, 0.99), "cpu")
    again.load_state_dict(sd)
    for p in model.parameters():
        for key, value in opt.state[p].items():
            assert torch.equal(torch.as_tensor(again.state[p][key]), torch.as_tensor(value)), key


def test_a_cpu_muon_checkpoint_resumes_with_torch_muon() -> None:
    """Float32Muon's state (CPU) loads into torch.optim.Muon (what CUDA uses), which then steps."""
    torch.manual_seed(0)
    model = build_model(preset_config("lab"))
    cpu_opt = make_optimizer(model, "muon", 1e-3, 0.1, (0.9, 0.99), "cpu")
    model(torch.randint(0, 256, (2, 8))).sum().backward()
    cpu_opt.step()
    hidden, io, vectors = split_params(model)
    torch_muon = torch.optim.Muon(hidden, lr=1e-3, weight_decay=0.1, adjust_lr_fn="match_rms_adamw")
    adamw = torch.optim.AdamW([{"params": io}, {"params": vectors, "weight_decay": 0.0}], betas=(0.9, 0.99))
    gpu_like = MuonWithAdamW(torch_muon, adamw)
    gpu_like.load_state_dict(cpu_opt.state_dict())
    assert torch.equal(gpu_like.state[hidden[0]]["momentum_buffer"], cpu_opt.state[hidden[0]]["momentum_buffer"])
    before = hidden[0].detach().clone()
    gpu_like.step()  # reads nesterov, ns_steps, ... which Float32Muon's groups never had
    assert not torch.equal(hidden[0], before)


def test_muon_training_learns_at_least_as_fast_as_adamw(corpus_file: Path, tmp_path: Path) -> None:
    """At this tiny size both reach the bigram plateau; the gap at real sizes is in benchmarks/optimizers.py."""
    prepared = prepare_data(str(corpus_file))
    bpc = {}
    for optimizer in ("adamw", "muon"):
        torch.manual_seed(0)
        model = build_model(preset_config("lab", max_len=32))
        tcfg = TrainConfig(steps=300, batch_size=16, eval_every=1000, optimizer=optimizer)
        result = train(model, prepared.tokenizer, prepared.train, prepared.valid, tcfg, tmp_path / optimizer)
        bpc[optimizer] = result.final.bpc
    assert bpc["muon"] < 3.6 and bpc["muon"] < bpc["adamw"] + 0.02, bpc  # uniform: 8 bits per character


def test_unknown_optimizer_is_a_clear_error() -> None:
    from attnlab.errors import AttnlabError

    with pytest.raises(AttnlabError, match="--optimizer sgd"):
        TrainConfig(steps=1, optimizer="sgd").validate()


@pytest.mark.parametrize("kind", ["adamw", "muon"])
def test_the_embeddings_learn_at_their_own_ratio_of_the_scheduled_rate(kind, corpus_file: Path, tmp_path) -> None:
    prepared = prepare_data(str(corpus_file))
    torch.manual_seed(0)
    model = build_model(preset_config("lab", max_len=32, tie_embeddings=False))
    tcfg = TrainConfig(steps=7, batch_size=4, eval_every=1000, optimizer=kind, embed_lr_ratio=3.0, warmup_steps=5)
    result = train(model, prepared.tokenizer, prepared.train, prepared.valid, tcfg, tmp_path / kind)
    from attnlab.training.train import make_optimizer as make_train_optimizer

    opt = make_train_optimizer(result.model, tcfg, "cpu")
    io = {id(p) for p in split_params(result.model)[1]}
    assert {id(p) for g in opt.param_groups if g.get("lr_ratio") == 3.0 for p in g["params"]} == io
    assert all(g.get("lr_ratio", 1.0) == 1.0 for g in opt.param_groups if not io & set(map(id, g["params"])))
    # in training, the schedule set that group's rate to 3x the others' (as the checkpoint saved them)
    state = json.loads((tmp_path / kind / "checkpoint" / "state.json").read_text())
    lrs = {g.get("lr_ratio", 1.0): g["lr"] for g in state["optimizer"]["param_groups"]}
    assert lrs[3.0] == pytest.approx(3 * lrs[1.0]) and lrs[1.0] > 0


def test_adamw_without_a_ratio_keeps_the_saved_group_layout() -> None:
    """Two groups, the matrices in the model's order: the optimizer states saved before embed_lr_ratio load."""
    model = build_model(preset_config("lab"))
    opt = make_optimizer(model, "adamw", 1e-3, 0.1, (0.9, 0.99), "cpu")
    matrices = [p for p in model.parameters() if p.dim() >= 2]
    assert len(opt.param_groups) == 2 and [id(p) for p in opt.param_groups[0]["params"]] == list(map(id, matrices))

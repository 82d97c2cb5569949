#!/usr/bin/python3
"""Generate tests/data/train/optimizer_steps.safetensors: five optimizer steps of
torch.optim.AdamW and torch.optim.SGD on a few small tensors with timm's names, for
tests/unit/test_optimizer.cpp to replay.

    /usr/bin/python3 tests/reference/make_optimizer_case.py [--out FILE]

Needs Debian's python3-torch (torch 1.13) and numpy. Deterministic: the values come from
numpy.random.RandomState with a fixed seed, torch runs single-threaded on CPU, and the
file is written byte-for-byte reproducibly (vit_reference.write_safetensors).

What is run (each in float32 and, from the same float32 values, in float64):

* parameters: cls_token, pos_embed, a patch embedding, one block's norm1 and qkv, the
  final norm and the head, with timm's names and shapes (NAMES_SHAPES below);
* timm's two parameter groups (param_groups_weight_decay with the VisionTransformer's
  no_weight_decay() names): no weight decay for ndim <= 1, names ending in ".bias",
  cls_token, dist_token and pos_embed; weight decay for the rest;
* per step: the stored gradients are copied into .grad, clipped with
  torch.nn.utils.clip_grad_norm_(max_norm=1.0) (its return value is stored), then
  optimizer.step() with the learning rate of the step (timm CosineLRScheduler formula,
  see lr_at), and the parameters are stored;
* runs: "adamw" (AdamW, weight_decay 0.05, betas 0.9/0.999, eps 1e-8), "sgd" (SGD,
  momentum 0.9, weight_decay 1e-4, nesterov False), "sgd_nesterov" (the same with
  nesterov True), "adamw_ft" (AdamW as "adamw", but cls_token and patch_embed.proj.weight
  frozen (requires_grad False: not in the optimizer, not clipped) and every parameter not
  under "head." at 0.1 x the learning rate, in four groups).

The head.bias gradients are tiny (about 1e-8), the size of eps, so the place where AdamW
adds eps matters. Steps 1 and 3 have gradient norms above 1, so clipping is active there.

Tensors written (K = step 0..4, P = parameter name, R = run):
    init.P                      F32  initial parameter
    grad.K.P                    F32  gradient of step K, before clipping
    lr                          F64  [5] learning rate of each step
    R.norm / R.f64.norm         F32 / F64 [5] what clip_grad_norm_ returned
    R.K.P / R.f64.K.P           F32 / F64  parameter after step K
"""

import argparse
import math
import os
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_reference as ref  # noqa: E402

SEED = 4242
STEPS = 5
MAX_NORM = 1.0

NAMES_SHAPES = [
    ("cls_token", [1, 1, 8]),
    ("pos_embed", [1, 5, 8]),
    ("patch_embed.proj.weight", [8, 3, 2, 2]),
    ("patch_embed.proj.bias", [8]),
    ("blocks.0.norm1.weight", [8]),
    ("blocks.0.norm1.bias", [8]),
    ("blocks.0.attn.qkv.weight", [24, 8]),
    ("blocks.0.attn.qkv.bias", [24]),
    ("norm.weight", [8]),
    ("norm.bias", [8]),
    ("head.weight", [3, 8]),
    ("head.bias", [3]),
]
NO_WEIGHT_DECAY = {"cls_token", "dist_token", "pos_embed"}

# Gradient scale per step: the total norm is about 20x this (403 values).
GRAD_SCALE = [0.02, 0.2, 0.01, 0.1, 0.03]

# timm CosineLRScheduler(t_initial=5, lr_min=1e-3, warmup_t=2, warmup_lr_init=5e-3,
# warmup_prefix=False) with base lr 0.05, updated per step.
BASE_LR, MIN_LR, WARMUP_LR, WARMUP_STEPS, TOTAL_STEPS = 0.05, 1e-3, 5e-3, 2, 5


def lr_at(step):
    if step < WARMUP_STEPS:
        return WARMUP_LR + step * ((BASE_LR - WARMUP_LR) / WARMUP_STEPS)
    if step >= TOTAL_STEPS:
        return MIN_LR
    return MIN_LR + 0.5 * (BASE_LR - MIN_LR) * (1 + math.cos(math.pi * step / TOTAL_STEPS))


def decays(name, shape):
    return not (len(shape) <= 1 or name.endswith(".bias") or name in NO_WEIGHT_DECAY)


RUNS = {
    "adamw": dict(opt="adamw", weight_decay=0.05),
    "sgd": dict(opt="sgd", weight_decay=1e-4, nesterov=False),
    "sgd_nesterov": dict(opt="sgd", weight_decay=1e-4, nesterov=True),
    "adamw_ft": dict(opt="adamw", weight_decay=0.05,
                     frozen={"cls_token", "patch_embed.proj.weight"},
                     backbone_lr_scale=0.1),
}


def make_data():
    rs = np.random.RandomState(SEED)
    init = {}
    for name, shape in NAMES_SHAPES:
        v = rs.standard_normal(shape) * 0.5
        if name.endswith("norm1.weight") or name == "norm.weight":
            v = 1 + 0.1 * rs.standard_normal(shape)
        init[name] = v.astype(np.float32)
    grads = []
    for k in range(STEPS):
        g = {}
        for name, shape in NAMES_SHAPES:
            scale = 2e-8 if name == "head.bias" else GRAD_SCALE[k]
            g[name] = (rs.standard_normal(shape) * scale).astype(np.float32)
        grads.append(g)
    return init, grads


def run(cfg, init, grads, dtype):
    frozen = cfg.get("frozen", set())
    params = {}
    for name, _ in NAMES_SHAPES:
        t = torch.tensor(init[name], dtype=dtype)
        t.requires_grad_(name not in frozen)
        params[name] = t
    # Parameter groups: (lr_scale, weight decay) -> parameters, in NAMES_SHAPES order.
    groups = {}
    for name, shape in NAMES_SHAPES:
        if name in frozen:
            continue
        scale = 1.0
        if "backbone_lr_scale" in cfg and not name.startswith("head."):
            scale = cfg["backbone_lr_scale"]
        wd = cfg["weight_decay"] if decays(name, shape) else 0.0
        groups.setdefault((scale, wd), []).append(params[name])
    param_groups = [dict(params=ps, lr=lr_at(0) * scale, weight_decay=wd, lr_scale=scale)
                    for (scale, wd), ps in groups.items()]
    if cfg["opt"] == "adamw":
        opt = torch.optim.AdamW(param_groups, lr=lr_at(0), betas=(0.9, 0.999), eps=1e-8)
    else:
        opt = torch.optim.SGD(param_groups, lr=lr_at(0), momentum=0.9, dampening=0,
                              nesterov=cfg["nesterov"])
    trainable = [params[n] for n, _ in NAMES_SHAPES if n not in frozen]
    norms, after = [], []
    for k in range(STEPS):
        for name, _ in NAMES_SHAPES:
            if name not in frozen:
                params[name].grad = torch.tensor(grads[k][name], dtype=dtype)
        norms.append(float(torch.nn.utils.clip_grad_norm_(trainable, MAX_NORM)))
        for g in opt.param_groups:
            g["lr"] = lr_at(k) * g["lr_scale"]
        opt.step()
        after.append({n: params[n].detach().numpy().copy() for n, _ in NAMES_SHAPES})
    return norms, after


def main(argv):
    here = os.path.dirname(os.path.abspath(__file__))
    default_out = os.path.join(here, "..", "data", "train", "optimizer_steps.safetensors")
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=os.path.normpath(default_out))
    args = ap.parse_args(argv)

    torch.set_num_threads(1)
    init, grads = make_data()
    tensors = {}
    for name, _ in NAMES_SHAPES:
        tensors["init." + name] = init[name]
        for k in range(STEPS):
            tensors[f"grad.{k}.{name}"] = grads[k][name]
    tensors["lr"] = np.array([lr_at(k) for k in range(STEPS)], dtype=np.float64)
    for run_name, cfg in RUNS.items():
        for dtype, np_dtype, tag in ((torch.float32, np.float32, ""),
                                     (torch.float64, np.float64, ".f64")):
            norms, after = run(cfg, init, grads, dtype)
            tensors[f"{run_name}{tag}.norm"] = np.array(norms, dtype=np_dtype)
            for k in range(STEPS):
                for name, _ in NAMES_SHAPES:
                    tensors[f"{run_name}{tag}.{k}.{name}"] = after[k][name].astype(np_dtype)
    metadata = {
        "generator": "tests/reference/make_optimizer_case.py",
        "torch": torch.__version__,
        "seed": str(SEED),
        "steps": str(STEPS),
        "max_norm": str(MAX_NORM),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    ref.write_safetensors(args.out, tensors, metadata)
    print(f"wrote {args.out}: {len(tensors)} tensors")
    for run_name in RUNS:
        print(f"  {run_name}: clip norms {[round(float(x), 4) for x in tensors[run_name + '.norm']]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/python3
"""Generate the architecture-variant fixtures in tests/data/variants/.

    /usr/bin/python3 tests/reference/make_variants.py [--out DIR]

Deterministic: weights and inputs come from numpy.random.RandomState with fixed seeds,
the forward pass is tests/reference/vit_reference.py run single-threaded on CPU, and
every file is written byte-for-byte reproducibly (sorted keys, fixed float formatting).

Each case folder gets model.safetensors (timm key names, float32), timm_config.json,
config.json (library-neutral schema of tests/data/*/config.json) and expected.safetensors.
"""

import argparse
import hashlib
import json
import math
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import vit_reference as ref  # noqa: E402

BATCH = 2
IMAGENET_DEFAULT_MEAN = [0.485, 0.456, 0.406]
IMAGENET_DEFAULT_STD = [0.229, 0.224, 0.225]
HALF = [0.5, 0.5, 0.5]

# name, seed, architecture and what differs from a plain ViT. `ckpt_image_size` is the
# resolution the checkpoint (and its position table) was made for; `image_size` is the
# resolution the expected outputs were computed at.
CASES = [
    dict(case="deit_distilled", seed=3001, arch="deit_tiny_distilled_patch16_224",
         ckpt_image_size=32, image_size=32, patch_size=8, dim=64, heads=4, num_classes=5,
         class_token=True, distill_token=True, pooling="token", fc_norm=False,
         qkv_bias=True, pos_embed="learned", mean=IMAGENET_DEFAULT_MEAN,
         std=IMAGENET_DEFAULT_STD, crop_pct=0.875,
         what="DeiT distilled: class + distillation token, head + head_dist, logits = mean "
              "of the two heads, pre_logits = mean of tokens 0 and 1 after the final norm"),
    dict(case="no_class_token", seed=3002, arch="vit_tiny_patch16_224",
         ckpt_image_size=32, image_size=32, patch_size=8, dim=64, heads=2, num_classes=4,
         class_token=False, distill_token=False, pooling="avg", fc_norm=True,
         qkv_bias=True, pos_embed="learned", mean=HALF, std=HALF, crop_pct=0.9,
         what="no prefix tokens at all; global average pool over all (patch) tokens, "
              "fc_norm, no final norm; pos_embed has grid*grid rows"),
    dict(case="resample_up", seed=3003, arch="vit_tiny_patch16_224",
         ckpt_image_size=64, image_size=96, patch_size=16, dim=64, heads=4, num_classes=3,
         class_token=True, distill_token=False, pooling="token", fc_norm=False,
         qkv_bias=True, pos_embed="learned", mean=HALF, std=HALF, crop_pct=0.9,
         what="checkpoint made for 64x64 (4x4 pos_embed grid) run at 96x96 (6x6): the "
              "table is enlarged at load time like timm does"),
    dict(case="resample_down", seed=3004, arch="vit_tiny_patch16_224",
         ckpt_image_size=96, image_size=48, patch_size=16, dim=64, heads=2, num_classes=6,
         class_token=True, distill_token=False, pooling="avg", fc_norm=True,
         qkv_bias=True, pos_embed="learned", mean=HALF, std=HALF, crop_pct=0.9,
         what="checkpoint made for 96x96 (6x6 grid) run at 48x48 (3x3): table shrunk at "
              "load time; class token kept (prefix row not resampled), average pooling "
              "of the patch tokens + fc_norm"),
    dict(case="sincos", seed=3005, arch="vit_tiny_patch16_224",
         ckpt_image_size=48, image_size=48, patch_size=8, dim=64, heads=4, num_classes=5,
         class_token=True, distill_token=False, pooling="token", fc_norm=False,
         qkv_bias=True, pos_embed="sincos", mean=HALF, std=HALF, crop_pct=0.9,
         what="fixed 2-D sin-cos position table (MAE layout) computed from the grid; no "
              "pos_embed tensor in the file; class-token row is zero"),
    dict(case="no_qkv_bias", seed=3006, arch="vit_tiny_patch16_224",
         ckpt_image_size=40, image_size=40, patch_size=8, dim=64, heads=4, num_classes=3,
         class_token=True, distill_token=False, pooling="token", fc_norm=False,
         qkv_bias=False, pos_embed="learned", mean=HALF, std=HALF, crop_pct=0.9,
         what="q/k/v projection without bias (no blocks.i.attn.qkv.bias in the file); "
              "5x5 grid"),
]
DEPTH = 2
MLP_RATIO = 4
EPS = 1e-6


# ----------------------------------------------------------------------------------------
# weights
# ----------------------------------------------------------------------------------------

def trunc_normal(rng, shape, std):
    """N(0, std^2) truncated at +-2 std (out-of-range draws are redrawn)."""
    z = rng.standard_normal(size=shape)
    while True:
        bad = np.abs(z) > 2.0
        if not bad.any():
            break
        z[bad] = rng.standard_normal(size=int(bad.sum()))
    return (z * std).astype(np.float32)


def linear_bias(rng, n):
    return (rng.standard_normal(n) * 0.05).astype(np.float32)


def ln_params(rng, d):
    w = (1.0 + rng.standard_normal(d) * 0.15).astype(np.float32)
    b = (rng.standard_normal(d) * 0.08).astype(np.float32)
    return w, b


def smooth_grid_table(rng, grid, d):
    """[grid*grid, d]: per channel a sum of 3 low-frequency plane waves over the grid
    (at most ~1.5 periods across), amplitude ~0.35, plus N(0, 0.02) noise."""
    ys, xs = np.meshgrid(np.arange(grid), np.arange(grid), indexing="ij")
    xs = xs.reshape(-1, 1) / grid
    ys = ys.reshape(-1, 1) / grid
    table = np.zeros((grid * grid, d))
    for _ in range(3):
        fx = rng.uniform(-1.5, 1.5, size=(1, d))
        fy = rng.uniform(-1.5, 1.5, size=(1, d))
        phase = rng.uniform(0, 2 * np.pi, size=(1, d))
        amp = rng.uniform(0.1, 0.3, size=(1, d))
        table += amp * np.cos(2 * np.pi * (fx * xs + fy * ys) + phase)
    table += rng.standard_normal(size=table.shape) * 0.02
    return table.astype(np.float32)


def make_weights(c, rng):
    d, p = c["dim"], c["patch_size"]
    m = d * MLP_RATIO
    g_ckpt = c["ckpt_image_size"] // p
    n_prefix = int(c["class_token"]) + int(c["distill_token"])
    w = {}
    w["patch_embed.proj.weight"] = trunc_normal(rng, (d, 3, p, p), 1.0 / math.sqrt(3 * p * p))
    w["patch_embed.proj.bias"] = linear_bias(rng, d)
    if c["class_token"]:
        w["cls_token"] = (rng.standard_normal((1, 1, d)) * 2e-3).astype(np.float32)
    if c["distill_token"]:
        w["dist_token"] = (rng.standard_normal((1, 1, d)) * 2e-3).astype(np.float32)
    if c["pos_embed"] == "learned":
        prefix_rows = (rng.standard_normal((n_prefix, d)) * 2e-3).astype(np.float32)
        w["pos_embed"] = np.concatenate(
            [prefix_rows, smooth_grid_table(rng, g_ckpt, d)], axis=0)[None]
    qk_std = math.sqrt(2.5 / d)
    for i in range(DEPTH):
        b = f"blocks.{i}."
        w[b + "norm1.weight"], w[b + "norm1.bias"] = ln_params(rng, d)
        q = trunc_normal(rng, (d, d), qk_std)
        k = trunc_normal(rng, (d, d), qk_std)
        v = trunc_normal(rng, (d, d), 1.0 / math.sqrt(d))
        w[b + "attn.qkv.weight"] = np.concatenate([q, k, v], axis=0)
        if c["qkv_bias"]:
            w[b + "attn.qkv.bias"] = linear_bias(rng, 3 * d)
        w[b + "attn.proj.weight"] = trunc_normal(rng, (d, d), 1.0 / math.sqrt(d))
        w[b + "attn.proj.bias"] = linear_bias(rng, d)
        w[b + "norm2.weight"], w[b + "norm2.bias"] = ln_params(rng, d)
        w[b + "mlp.fc1.weight"] = trunc_normal(rng, (m, d), 1.0 / math.sqrt(d))
        w[b + "mlp.fc1.bias"] = linear_bias(rng, m)
        w[b + "mlp.fc2.weight"] = trunc_normal(rng, (d, m), 1.0 / math.sqrt(m))
        w[b + "mlp.fc2.bias"] = linear_bias(rng, d)
    if c["fc_norm"]:
        w["fc_norm.weight"], w["fc_norm.bias"] = ln_params(rng, d)
    else:
        w["norm.weight"], w["norm.bias"] = ln_params(rng, d)
    ncls = c["num_classes"]
    w["head.weight"] = trunc_normal(rng, (ncls, d), 1.0 / math.sqrt(d))
    w["head.bias"] = linear_bias(rng, ncls)
    if c["distill_token"]:
        w["head_dist.weight"] = trunc_normal(rng, (ncls, d), 1.0 / math.sqrt(d))
        w["head_dist.bias"] = linear_bias(rng, ncls)
    return w


def make_pixels(rng, n, s):
    """Deterministic test images: smooth colour field + noise as 8-bit values, then
    (u8 / 255 - 0.5) / 0.5 in float32, so values lie in [-1, 1]."""
    ys, xs = np.meshgrid(np.arange(s) / s, np.arange(s) / s, indexing="ij")
    imgs = np.zeros((n, 3, s, s))
    for i in range(n):
        for ch in range(3):
            field = np.zeros((s, s))
            for _ in range(3):
                fx, fy = rng.uniform(-2, 2, size=2)
                ph = rng.uniform(0, 2 * np.pi)
                field += np.cos(2 * np.pi * (fx * xs + fy * ys) + ph)
            imgs[i, ch] = 127.5 + 35.0 * field + rng.standard_normal((s, s)) * 30.0
    u8 = np.clip(np.rint(imgs), 0, 255).astype(np.uint8)
    x = u8.astype(np.float32) / np.float32(255.0)
    x = (x - np.float32(0.5)) / np.float32(0.5)
    return x.astype(np.float32)


# ----------------------------------------------------------------------------------------
# configs
# ----------------------------------------------------------------------------------------

def vit_config(c):
    g_ckpt = c["ckpt_image_size"] // c["patch_size"]
    return ref.ViTConfig(
        image_size=c["image_size"], patch_size=c["patch_size"], dim=c["dim"], depth=DEPTH,
        heads=c["heads"], mlp_dim=c["dim"] * MLP_RATIO, num_classes=c["num_classes"],
        qkv_bias=c["qkv_bias"], layer_norm_eps=EPS, class_token=c["class_token"],
        distill_token=c["distill_token"], pooling=c["pooling"], fc_norm=c["fc_norm"],
        pos_embed=c["pos_embed"],
        pos_embed_grid=(g_ckpt, g_ckpt) if c["pos_embed"] == "learned" else None)


def timm_config(c):
    """What timm writes as config.json next to a hub checkpoint (describes the checkpoint,
    i.e. its own resolution; running at another size is a create_model override)."""
    s = c["ckpt_image_size"]
    model_args = {
        "img_size": s,
        "patch_size": c["patch_size"],
        "embed_dim": c["dim"],
        "depth": DEPTH,
        "num_heads": c["heads"],
        "mlp_ratio": float(MLP_RATIO),
        "class_token": c["class_token"],
        "no_embed_class": False,
        "qkv_bias": c["qkv_bias"],
        "global_pool": c["pooling"],
        "fc_norm": c["fc_norm"],
        "num_classes": c["num_classes"],
    }
    if c["pos_embed"] == "sincos":
        # Not a value timm's VisionTransformer understands (it would create a learned
        # table and then miss `pos_embed` in the file); see README.md.
        model_args["pos_embed"] = "sincos"
    return {
        "architecture": c["arch"],
        "num_classes": c["num_classes"],
        "num_features": c["dim"],
        "global_pool": c["pooling"],
        "model_args": model_args,
        "pretrained_cfg": {
            "input_size": [3, s, s],
            "fixed_input_size": True,
            "interpolation": "bicubic",
            "crop_pct": c["crop_pct"],
            "crop_mode": "center",
            "mean": c["mean"],
            "std": c["std"],
            "num_classes": c["num_classes"],
            "pool_size": None,
            "first_conv": "patch_embed.proj",
            "classifier": ["head", "head_dist"] if c["distill_token"] else "head",
        },
    }


def neutral_config(c, cfg, weights, model_sha, extra):
    g = cfg.grid
    n_prefix = cfg.num_prefix_tokens
    if c["pos_embed"] == "learned":
        pe_grid = list(cfg.pos_embed_grid)
        pe_tokens = int(weights["pos_embed"].shape[1])
    else:
        pe_grid = [g, g]
        pe_tokens = cfg.num_tokens
    resample = None
    if pe_grid != [g, g]:
        resample = {
            "from": pe_grid,
            "to": [g, g],
            "method": "timm resample_abs_pos_embed: prefix rows kept as they are; the "
                      "[1, D, gh, gw] grid resized with torch.nn.functional.interpolate("
                      "mode='bicubic', antialias=True, align_corners=False) in float32",
        }
    pooling = "avg" if c["pooling"] == "avg" else "cls"
    out = {
        "case": c["case"],
        "description": c["what"],
        "naming": "timm",
        "image_size": c["image_size"],
        "checkpoint_image_size": c["ckpt_image_size"],
        "patch_size": c["patch_size"],
        "in_chans": 3,
        "grid_size": [g, g],
        "num_patches": g * g,
        "dim": c["dim"],
        "depth": DEPTH,
        "heads": c["heads"],
        "head_dim": c["dim"] // c["heads"],
        "mlp_dim": c["dim"] * MLP_RATIO,
        "num_classes": c["num_classes"],
        "qkv_bias": c["qkv_bias"],
        "layer_norm_eps": EPS,
        "activation": "gelu_erf",
        "attn_scale": (c["dim"] // c["heads"]) ** -0.5,
        "pooling": pooling,
        "class_token": c["class_token"],
        "distill_token": c["distill_token"],
        "num_prefix_tokens": n_prefix,
        "num_tokens": cfg.num_tokens,
        "final_norm": not c["fc_norm"],
        "fc_norm": c["fc_norm"],
        "head": "linear",
        "pos_embed": c["pos_embed"],
        "pos_embed_grid": pe_grid,
        "pos_embed_tokens": pe_tokens,
        "pos_embed_resample": resample,
        "batch_size": BATCH,
        "preprocess": {
            "input": "no image file: expected.safetensors pixel_values is the model input "
                     "(batch of %d)" % BATCH,
            "pixel_values": "(u8 / 255 - 0.5) / 0.5 in float32 of a random 8-bit image "
                            "(smooth colour field + noise), so values lie in [-1, 1]",
            "mean": HALF,
            "std": HALF,
        },
        "weights": {
            "file": "model.safetensors",
            "dtype": "F32",
            "num_tensors": len(weights),
            "num_params": int(sum(v.size for v in weights.values())),
            "generator_seed": c["seed"],
            "sha256": model_sha,
        },
        "reference": "computed by tests/reference/vit_reference.py (our own independent "
                     "PyTorch reference, not timm) via tests/reference/make_variants.py; "
                     "torch %s, numpy %s, CPU, 1 thread" % (torch.__version__, np.__version__),
        "float64_outputs": extra["f64_note"],
    }
    if c["mean"] != HALF:
        out["preprocess"]["note"] = (
            "timm_config.json gives the checkpoint's nominal normalisation (mean %s, std %s) "
            "for real images; it was not used here: pixel_values are given directly"
            % (c["mean"], c["std"]))
    if c["pos_embed"] == "sincos":
        out["pos_embed_sincos"] = (
            "omega_i = 1/10000^(i/(D/4)), i = 0..D/4-1; patch at row y, column x (token "
            "prefix + y*g + x): features [0, D/2) = [sin(x*omega), cos(x*omega)], "
            "[D/2, D) = [sin(y*omega), cos(y*omega)]; prefix-token rows are zero; computed "
            "in float64 (cast to float32 for the float32 run)")
    return out


# ----------------------------------------------------------------------------------------
# main
# ----------------------------------------------------------------------------------------

def dump_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2)
        f.write("\n")


def make_case(c, out_root):
    rng = np.random.RandomState(c["seed"])
    weights = make_weights(c, rng)
    pixels = make_pixels(np.random.RandomState(c["seed"] + 500), BATCH, c["image_size"])
    cfg = vit_config(c)

    case_dir = os.path.join(out_root, c["case"])
    os.makedirs(case_dir, exist_ok=True)
    model_path = os.path.join(case_dir, "model.safetensors")
    ref.write_safetensors(model_path, weights, {"format": "pt"})
    with open(model_path, "rb") as f:
        model_sha = hashlib.sha256(f.read()).hexdigest()

    # run the reference from what was written (round trip through the file)
    tw = ref.load_weights(model_path)
    px = torch.from_numpy(pixels)
    with torch.no_grad():
        o32 = ref.forward(tw, cfg, px, torch.float32)
        o64 = ref.forward(tw, cfg, px, torch.float64)
        # same float64 run but with the position table resampled in float64, only to
        # report how much the float32 resample (as timm does it) matters
        o64b = None
        if c["pos_embed"] == "learned" and cfg.pos_embed_grid != (cfg.grid, cfg.grid):
            pe64 = _resample_f64(tw["pos_embed"].double(), cfg)
            o64b = ref.forward(tw, cfg, px, torch.float64, pos_table=pe64)

    exp = {"pixel_values": pixels}
    for k in ("pos_embed_used", "embeddings", "last_hidden_state", "pre_logits", "logits",
              "attn_probs.last"):
        exp[k] = o32[k].numpy().astype(np.float32)
    for i in range(DEPTH):
        exp[f"hidden_states.{i}"] = o32[f"hidden_states.{i}"].numpy().astype(np.float32)
    exp["logits_f64"] = o64["logits"].numpy().astype(np.float64)
    exp["pre_logits_f64"] = o64["pre_logits"].numpy().astype(np.float64)
    ref.write_safetensors(os.path.join(case_dir, "expected.safetensors"), exp,
                          {"case": c["case"],
                           "generator": "tests/reference/make_variants.py"})

    stats = {
        "f32_vs_f64_logits": float(np.max(np.abs(exp["logits"] - exp["logits_f64"]))),
        "f32_vs_f64_pre_logits": float(np.max(np.abs(exp["pre_logits"] - exp["pre_logits_f64"]))),
        "logits_range": float(np.max(np.abs(exp["logits_f64"]))),
        "attn_max_prob": float(exp["attn_probs.last"].max()),
    }
    if c["pos_embed"] == "sincos":
        f64_note = ("float64 run of the same model on the same float32 pixel_values; the "
                    "sin-cos table is used in float64 directly (not rounded to float32)")
    elif o64b is not None:
        d = float(np.max(np.abs(o64b["logits"].numpy() - exp["logits_f64"])))
        stats["f64_resample_in_f64_vs_f32_logits"] = d
        f64_note = ("float64 run of the same model on the same float32 pixel_values; the "
                    "position table is resampled in float32 and then cast to float64, as "
                    "timm does (resampling in float64 instead moves logits_f64 by %.1e, so "
                    "compare a float64 build to 1e-6 here)" % d)
    else:
        f64_note = "float64 run of the same model on the same float32 pixel_values"

    dump_json(os.path.join(case_dir, "config.json"),
              neutral_config(c, cfg, weights, model_sha, {"f64_note": f64_note}))
    dump_json(os.path.join(case_dir, "timm_config.json"), timm_config(c))
    return stats


def _resample_f64(table64, cfg):
    """Float64 resample through the same torch call (for the stats only)."""
    npf = cfg.num_prefix_tokens
    gh, gw = cfg.pos_embed_grid
    d = table64.shape[-1]
    img = table64[:, npf:].reshape(1, gh, gw, d).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(cfg.grid, cfg.grid), mode="bicubic", antialias=True,
                        align_corners=False)
    rows = img.permute(0, 2, 3, 1).reshape(1, -1, d)
    return torch.cat([table64[:, :npf], rows], dim=1)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    here = os.path.dirname(os.path.abspath(__file__))
    ap.add_argument("--out", default=os.path.normpath(os.path.join(here, "..", "data", "variants")))
    args = ap.parse_args()
    torch.set_num_threads(1)
    os.makedirs(args.out, exist_ok=True)
    index = {"format_version": 1, "generator": "tests/reference/make_variants.py",
             "cases": []}
    for c in CASES:
        stats = make_case(c, args.out)
        print(c["case"], json.dumps(stats))
        index["cases"].append({
            "name": c["case"], "naming": "timm", "image_size": c["image_size"],
            "num_classes": c["num_classes"],
            "files": ["config.json", "expected.safetensors", "model.safetensors",
                      "timm_config.json"]})
    dump_json(os.path.join(args.out, "index.json"), index)


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""PyTorch reference of the library's training code (vit/train/*.hpp and the vit-train recipe).

Plain torch (no timm): the model is timm's VisionTransformer written out as a function over
a dict of tensors with timm's names, so its parameters line up name by name with
VisionTransformer::named_parameters() of the C++ library.

Two subcommands:

  step   Writes the fixture of "one training step matches PyTorch":
             /usr/bin/python3 tests/reference/train_reference.py step \\
                 --out tests/data/train/step.safetensors
         A tiny ViT (image 16, patch 4, width 24, depth 2, 3 heads, MLP 48, 5 classes) with
         deterministic random weights, a batch of 6 random images, label-smoothed
         cross-entropy, backward, clip_grad_norm_(1.0) and one AdamW step with timm's
         parameter groups. Tensors written (float32; <name> = every timm parameter name):
             param.<name>    initial parameters
             images          [6, 3*16*16] one normalised CHW image per row
             labels          [6] class indices, stored as float32
             logits [6, 5], loss [1]
             grad.<name>     d(loss)/d(parameter), before clipping
             grad_norm [1]   what clip_grad_norm_ returned (the norm before clipping)
             updated.<name>  parameters after the clipped AdamW step
         The architecture and the hyper-parameters are in the file's __metadata__.
         Deterministic (one thread, fixed seed, reproducible writer): running it again with
         the same BLAS gives the same bytes (the stored file was made with Debian's
         reference libblas3; another BLAS changes the last bits, well inside the tolerances).

  train  Trains the CIFAR-10 recipe of vit-train, with the same flag names and defaults,
         so the C++ result can be compared with PyTorch's after the same number of epochs:
             /usr/bin/python3 tests/reference/train_reference.py train \\
                 --data CIFAR10_DIR --epochs E [--csv epochs.csv] [other flags]
         DIR holds train.bin and test.bin in the CIFAR-10 binary layout (3073-byte records:
         label, then the R, G, B planes of 32x32). Quick check:
             ... train --data CIFAR10_DIR --epochs 1 --limit-train 1024 --limit-test 500
         --processes P trains data-parallel in P processes (gloo, --threads each): each
         process runs a contiguous 1/P of every batch and the gradients are averaged before
         clipping, the same step as one process up to the order of float sums. With
         `--processes 2 --threads 1` the recipe's model trains about twice as fast on two
         cores as with one process (torch gains little from a second thread at this size).
         The recipe:
           * data: (x / 255 - mean) / std with mean (0.4914, 0.4822, 0.4465),
             std (0.2470, 0.2435, 0.2616); training images randomly cropped to 32 x 32 from
             the image padded with 4 black pixels on each side, then flipped left-right with
             probability 0.5 (with --crop-scale S > 0 instead: a random resized crop of
             area fraction U(S, 1) and aspect 3/4 to 4/3, resized back to 32 x 32 with
             antialiased bilinear, then the flip) (resized to --image-size when that is
             not 32), then with
             --random-erase P random erasing of the uint8 image (vit::data::random_erasing:
             with probability P one box of 2% to 1/3 of the area, aspect 0.3 to 1/0.3,
             filled with random bytes); a new random order every epoch; the last incomplete
             batch dropped;
           * model: class token, learned position table, exact GELU, LayerNorm eps 1e-6,
             qkv bias; mlp_hidden = embed_dim * mlp_ratio; --pool token (default): final
             norm, class-token pooling; --pool avg (timm's global_pool='avg'): no final norm,
             the mean of the patch tokens, then fc_norm; timm's initialisation
             (trunc_normal std 0.02 for the Linear weights, the patch projection seen as a
             Linear, pos_embed and the head; zero biases; cls_token normal std 1e-6;
             LayerNorm weight 1, bias 0);
           * Mixup / CutMix with --mixup A / --cutmix A (Beta alphas, 0: off), --mix-prob:
             timm's Mixup in mode 'batch' (vit::train::mix_batch) on the normalised batch,
             switch probability 0.5, soft targets from the label-smoothed one-hot vectors;
           * loss: cross-entropy with label smoothing (with mixing: the soft-target
             cross-entropy of the mixed targets; training top-1 still counts the original
             labels); gradients clipped to a total 2-norm of --clip-grad (0: no clipping);
           * optimizer: torch.optim.AdamW (betas 0.9 / 0.999, eps 1e-8) with timm's two
             parameter groups: weight decay for tensors with ndim >= 2 except cls_token and
             pos_embed, none for biases, LayerNorms and the tokens;
           * learning rate per optimizer step s (0-based) of S = epochs * steps_per_epoch,
             W = warmup_epochs * steps_per_epoch: a linear warm-up from 0, then a cosine
             from lr that reaches min_lr after the last step (timm's CosineLRScheduler per
             step with warmup_lr_init 0 and warmup_prefix True; vit::train::CosineSchedule
             with warmup_prefix = true):
                 s < W:  lr * s / W
                 else:   min_lr + (lr - min_lr) * (1 + cos(pi * (s - W) / (S - W))) / 2
         Prints one line per epoch (epoch, mean train loss, train images/s measured over the
         training loop only, test top-1 in percent) and at the end one JSON line
         {"epochs", "test_top1" (percent), "images_per_s", "seconds", ...}; "seconds" is the
         wall time of the whole run, "train_seconds" that of the training loops alone.
         --csv writes the columns of vit-train's log.csv: epoch, train_loss, train_top1,
         val_loss (test set, no smoothing), val_top1, val_top5 (fractions), lr (of the
         epoch's last step), images_per_s, seconds (since the start).

Needs Debian's python3-torch (torch 1.13) and numpy. Debian's torch does its matrix products
with whatever libblas.so.3 the system selects; with the reference BLAS (libblas3, the default)
training is several times slower than with OpenBLAS (package libopenblas0-pthread). `train`
prints which BLAS it loaded, and sets OPENBLAS_NUM_THREADS to --threads unless it is set.
"""

import argparse
import json
import math
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from typing import Dict, List, Tuple



def _blas_threads_from_argv(argv: List[str]) -> int:
    """Threads the BLAS should use: --threads of `train` (default 2), 1 for `step`."""
    if not argv or argv[0] != "train":
        return 1
    for i, arg in enumerate(argv):
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
        if arg == "--threads" and i + 1 < len(argv):
            return int(argv[i + 1])
    return 2


# OpenBLAS, when it is the libblas.so.3 that torch and numpy load, reads its thread count
# once, when it is loaded: set it before the imports below.
if __name__ == "__main__":
    os.environ.setdefault("OPENBLAS_NUM_THREADS", str(_blas_threads_from_argv(sys.argv[1:])))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from vit_reference import (ViTConfig, read_safetensors,  # noqa: E402
                           write_safetensors)
from vit_reference import forward as reference_forward  # noqa: E402

# ----------------------------------------------------------------------------------------
# the model: timm's VisionTransformer (class token, learned table, token or avg pooling)
# ----------------------------------------------------------------------------------------

# Pooling of the encoder output, as vit-train's --pool (timm's global_pool):
#   token: the class token after the final `norm` (timm's default);
#   avg:   the mean of the patch tokens (the class token is still in the sequence but left
#          out of the mean), no final norm (timm's Identity), `fc_norm` on the pooled vector.
POOLS = ("token", "avg")


@dataclass
class Arch:
    image_size: int
    patch_size: int
    embed_dim: int
    depth: int
    num_heads: int
    mlp_hidden: int
    num_classes: int
    in_chans: int = 3
    layer_norm_eps: float = 1e-6

    @property
    def grid(self) -> int:
        return self.image_size // self.patch_size

    @property
    def num_tokens(self) -> int:
        return 1 + self.grid * self.grid


NO_WEIGHT_DECAY = {"cls_token", "dist_token", "pos_embed"}


def param_shapes(a: Arch, pool: str = "token") -> List[Tuple[str, Tuple[int, ...]]]:
    """timm's parameter names and shapes, in timm's (and named_parameters()') order."""
    d, m = a.embed_dim, a.mlp_hidden
    out = [("cls_token", (1, 1, d)), ("pos_embed", (1, a.num_tokens, d)),
           ("patch_embed.proj.weight", (d, a.in_chans, a.patch_size, a.patch_size)),
           ("patch_embed.proj.bias", (d,))]
    for i in range(a.depth):
        b = f"blocks.{i}."
        out += [(b + "norm1.weight", (d,)), (b + "norm1.bias", (d,)),
                (b + "attn.qkv.weight", (3 * d, d)), (b + "attn.qkv.bias", (3 * d,)),
                (b + "attn.proj.weight", (d, d)), (b + "attn.proj.bias", (d,)),
                (b + "norm2.weight", (d,)), (b + "norm2.bias", (d,)),
                (b + "mlp.fc1.weight", (m, d)), (b + "mlp.fc1.bias", (m,)),
                (b + "mlp.fc2.weight", (d, m)), (b + "mlp.fc2.bias", (d,))]
    if pool == "avg":
        out += [("fc_norm.weight", (d,)), ("fc_norm.bias", (d,))]
    else:
        out += [("norm.weight", (d,)), ("norm.bias", (d,))]
    out += [("head.weight", (a.num_classes, d)), ("head.bias", (a.num_classes,))]
    return out


def vit_forward(p: Dict[str, torch.Tensor], a: Arch, images: torch.Tensor,
                pool: str = "token") -> torch.Tensor:
    """Logits [N, num_classes] of images [N, C, S, S], as timm's VisionTransformer.forward
    with global_pool = pool (see POOLS)."""
    n, d, heads = images.shape[0], a.embed_dim, a.num_heads
    hd = d // heads
    eps = a.layer_norm_eps
    # patch embedding: a conv with stride = kernel = patch size; tokens row-major over the grid
    x = F.conv2d(images, p["patch_embed.proj.weight"], p["patch_embed.proj.bias"],
                 stride=a.patch_size)
    x = x.flatten(2).transpose(1, 2)                                       # N, g*g, D
    x = torch.cat([p["cls_token"].expand(n, -1, -1), x], dim=1) + p["pos_embed"]
    t = x.shape[1]
    for i in range(a.depth):
        b = f"blocks.{i}."
        y = F.layer_norm(x, (d,), p[b + "norm1.weight"], p[b + "norm1.bias"], eps)
        qkv = F.linear(y, p[b + "attn.qkv.weight"], p[b + "attn.qkv.bias"])
        qkv = qkv.reshape(n, t, 3, heads, hd).permute(2, 0, 3, 1, 4)      # 3, N, H, T, hd
        q, k, v = qkv.unbind(0)
        attn = (q @ k.transpose(-2, -1)) * (hd ** -0.5)
        attn = attn.softmax(dim=-1)
        y = (attn @ v).transpose(1, 2).reshape(n, t, d)
        x = x + F.linear(y, p[b + "attn.proj.weight"], p[b + "attn.proj.bias"])
        y = F.layer_norm(x, (d,), p[b + "norm2.weight"], p[b + "norm2.bias"], eps)
        y = F.gelu(F.linear(y, p[b + "mlp.fc1.weight"], p[b + "mlp.fc1.bias"]))
        x = x + F.linear(y, p[b + "mlp.fc2.weight"], p[b + "mlp.fc2.bias"])
    if pool == "avg":
        pooled = x[:, 1:].mean(dim=1)                                      # patch tokens only
        pooled = F.layer_norm(pooled, (d,), p["fc_norm.weight"], p["fc_norm.bias"], eps)
        return F.linear(pooled, p["head.weight"], p["head.bias"])
    x = F.layer_norm(x, (d,), p["norm.weight"], p["norm.bias"], eps)
    return F.linear(x[:, 0], p["head.weight"], p["head.bias"])


def uses_weight_decay(name: str, shape) -> bool:
    """timm's rule: no decay for ndim <= 1, '.bias', and the no_weight_decay() names."""
    return len(shape) >= 2 and not name.endswith(".bias") and name not in NO_WEIGHT_DECAY


def make_adamw(params: Dict[str, torch.Tensor], lr: float, weight_decay: float):
    decay = [t for k, t in params.items() if uses_weight_decay(k, t.shape)]
    no_decay = [t for k, t in params.items() if not uses_weight_decay(k, t.shape)]
    groups = [{"params": no_decay, "weight_decay": 0.0},
              {"params": decay, "weight_decay": weight_decay}]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8)


# ----------------------------------------------------------------------------------------
# step: the one-step fixture
# ----------------------------------------------------------------------------------------

STEP_ARCH = Arch(image_size=16, patch_size=4, embed_dim=24, depth=2, num_heads=3,
                 mlp_hidden=48, num_classes=5)
STEP_BATCH = 6
STEP_SEED = 0
STEP_SMOOTHING = 0.1
STEP_MAX_NORM = 1.0
STEP_LR = 1e-3
STEP_WEIGHT_DECAY = 0.05


def step_params(a: Arch) -> Dict[str, torch.Tensor]:
    """Random weights where every gradient is non-trivial: matrices (and the tokens)
    truncated-normal std 0.2 (cut at 2 sigma), biases N(0, 0.05), LayerNorm weights
    1 + N(0, 0.1), LayerNorm biases N(0, 0.05)."""
    out = {}
    for name, shape in param_shapes(a):
        t = torch.empty(shape, dtype=torch.float32)
        is_norm = ".norm" in "." + name
        if is_norm and name.endswith(".weight"):
            t = 1 + 0.1 * torch.randn(shape)
        elif name.endswith(".bias"):
            t = 0.05 * torch.randn(shape)
        else:
            torch.nn.init.trunc_normal_(t, std=0.2, a=-0.4, b=0.4)
        out[name] = t.contiguous()
    return out


def run_step(params0: Dict[str, torch.Tensor], images: torch.Tensor, labels: torch.Tensor,
             dtype: torch.dtype):
    a = STEP_ARCH
    p = {k: v.to(dtype).clone().requires_grad_(True) for k, v in params0.items()}
    logits = vit_forward(p, a, images.to(dtype))
    loss = F.cross_entropy(logits, labels, label_smoothing=STEP_SMOOTHING)
    loss.backward()
    grads = {k: v.grad.detach().clone() for k, v in p.items()}
    norm = torch.nn.utils.clip_grad_norm_(list(p.values()), STEP_MAX_NORM)
    opt = make_adamw(p, STEP_LR, STEP_WEIGHT_DECAY)
    opt.step()
    updated = {k: v.detach().clone() for k, v in p.items()}
    return logits.detach(), loss.detach(), grads, norm.detach(), updated


def rel_l2(got: torch.Tensor, ref: torch.Tensor) -> float:
    got, ref = got.double(), ref.double()
    return float((got - ref).norm() / ref.norm())


def cmd_step(args) -> int:
    torch.set_num_threads(1)
    torch.manual_seed(STEP_SEED)
    a = STEP_ARCH
    params0 = step_params(a)
    images = torch.randn(STEP_BATCH, a.in_chans, a.image_size, a.image_size)
    labels = torch.tensor([0, 3, 1, 4, 2, 3], dtype=torch.int64)
    assert labels.numel() == STEP_BATCH

    logits, loss, grads, norm, updated = run_step(params0, images, labels, torch.float32)
    assert float(norm) > STEP_MAX_NORM, "clipping should be active in the fixture"

    # Cross-checks (printed, not stored): the independent inference forward of
    # vit_reference.py, and the same step in float64 (the float32 noise floor).
    cfg = ViTConfig(image_size=a.image_size, patch_size=a.patch_size, dim=a.embed_dim,
                    depth=a.depth, heads=a.num_heads, mlp_dim=a.mlp_hidden,
                    num_classes=a.num_classes)
    with torch.no_grad():
        other = reference_forward(params0, cfg, images)["logits"]
    print(f"logits vs vit_reference.forward: max|diff| {float((other - logits).abs().max()):.2e}")
    l64, loss64, g64, n64, u64 = run_step(params0, images, labels, torch.float64)
    print(f"float32 vs float64: logits rel L2 {rel_l2(logits, l64):.2e}, loss rel "
          f"{abs(float(loss) - float(loss64)) / float(loss64):.2e}, grad_norm rel "
          f"{abs(float(norm) - float(n64)) / float(n64):.2e}")
    worst_g = max((rel_l2(grads[k], g64[k]), k) for k in grads)
    # The key rows of each qkv bias have a zero gradient in exact arithmetic (softmax ignores
    # a shift shared by all keys), so AdamW moves them by +-lr with the sign of rounding noise:
    # left out here.
    d = a.embed_dim
    worst_u = max((rel_l2(torch.cat([updated[k][:d], updated[k][2 * d:]]),
                          torch.cat([u64[k][:d], u64[k][2 * d:]])) if k.endswith("attn.qkv.bias")
                   else rel_l2(updated[k], u64[k]), k) for k in updated)
    print(f"float32 vs float64: worst gradient rel L2 {worst_g[0]:.2e} ({worst_g[1]}), "
          f"worst updated rel L2 {worst_u[0]:.2e} ({worst_u[1]}; key biases left out)")
    smallest = min((float(g.abs().max()), k) for k, g in grads.items())
    print(f"loss {float(loss):.6f}, grad_norm {float(norm):.6f}, "
          f"smallest max|grad| {smallest[0]:.2e} ({smallest[1]})")

    tensors = {}
    for k in params0:
        tensors["param." + k] = params0[k].numpy()
        tensors["grad." + k] = grads[k].numpy()
        tensors["updated." + k] = updated[k].numpy()
    tensors["images"] = images.reshape(STEP_BATCH, -1).numpy()
    tensors["labels"] = labels.to(torch.float32).numpy()
    tensors["logits"] = logits.numpy()
    tensors["loss"] = loss.reshape(1).numpy()
    tensors["grad_norm"] = norm.reshape(1).to(torch.float32).numpy()
    meta = {k: str(v) for k, v in asdict(a).items()}
    meta.update({
        "format": "pt", "qkv_bias": "true", "activation": "gelu_erf", "pooling": "cls",
        "class_token": "true", "final_norm": "true", "batch": str(STEP_BATCH),
        "label_smoothing": str(STEP_SMOOTHING), "max_norm": str(STEP_MAX_NORM),
        "lr": str(STEP_LR), "beta1": "0.9", "beta2": "0.999", "adam_eps": "1e-08",
        "weight_decay": str(STEP_WEIGHT_DECAY), "labels_dtype": "F32",
        "torch": torch.__version__, "seed": str(STEP_SEED),
    })
    out = args.out
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    write_safetensors(out, tensors, meta)
    print(f"wrote {out}: {len(tensors)} tensors")
    # Read it back.
    back, _ = read_safetensors(out)
    assert all(np.array_equal(back[k], np.ascontiguousarray(v)) for k, v in tensors.items())
    return 0


# ----------------------------------------------------------------------------------------
# train: the CIFAR-10 recipe
# ----------------------------------------------------------------------------------------

CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)
CIFAR_SIDE = 32
CIFAR_RECORD = 1 + 3 * CIFAR_SIDE * CIFAR_SIDE


def load_cifar(path: str, limit: int) -> Tuple[np.ndarray, np.ndarray]:
    """(images uint8 [N, 3, 32, 32], labels int64 [N]) of a CIFAR-10 binary file; the first
    `limit` records when limit > 0."""
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % CIFAR_RECORD != 0:
        raise SystemExit(f"{path}: {raw.size} bytes is not a whole number of "
                         f"{CIFAR_RECORD}-byte CIFAR-10 records")
    rec = raw.reshape(-1, CIFAR_RECORD)
    if limit > 0:
        rec = rec[:limit]
    labels = rec[:, 0].astype(np.int64)
    if labels.max() > 9:
        raise SystemExit(f"{path}: label {labels.max()} is not a CIFAR-10 class")
    images = np.ascontiguousarray(rec[:, 1:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE))
    return images, labels


class Normalize:
    def __init__(self, image_size: int):
        self.mean = torch.tensor(CIFAR_MEAN, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.std = torch.tensor(CIFAR_STD, dtype=torch.float32).reshape(1, 3, 1, 1)
        self.image_size = image_size

    def __call__(self, u8: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(u8).to(torch.float32) / 255
        if self.image_size != x.shape[-1]:
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear",
                              align_corners=False, antialias=True)
        return (x - self.mean) / self.std


def augment(u8: np.ndarray, rng: np.random.Generator, pad: int = 4) -> np.ndarray:
    """Random crop of the original size from the image padded with `pad` black pixels per
    side, then a left-right flip with probability 0.5; vectorised over the batch."""
    n, c, h, w = u8.shape
    padded = np.zeros((n, c, h + 2 * pad, w + 2 * pad), dtype=np.uint8)
    padded[:, :, pad:pad + h, pad:pad + w] = u8
    top = rng.integers(0, 2 * pad + 1, size=n)
    left = rng.integers(0, 2 * pad + 1, size=n)
    flip = rng.random(n) < 0.5
    cols = np.where(flip[:, None], np.arange(w)[::-1][None, :], np.arange(w)[None, :])
    rows = top[:, None] + np.arange(h)[None, :]                      # n, h
    cols = left[:, None] + cols                                      # n, w
    out = padded[np.arange(n)[:, None, None], :, rows[:, :, None], cols[:, None, :]]
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2))          # n, h, w, c -> n, c, h, w


def random_resized_crop(u8: np.ndarray, rng: np.random.Generator, scale_min: float,
                        ratio=(3 / 4, 4 / 3)) -> np.ndarray:
    """Random resized crop of each image of a uint8 batch [N, C, H, W] back to H x W, then a
    left-right flip with probability 0.5: the algorithm of vit::data::random_resized_crop_box
    (torchvision's RandomResizedCrop.get_params) with area fraction U(scale_min, 1); the box is
    resized with torch's antialiased bilinear filter (Pillow's, up to rounding)."""
    n, c, h, w = u8.shape
    area = float(h * w)
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    out = np.empty_like(u8)
    for i in range(n):
        box = None
        for _ in range(10):
            target_area = area * float(rng.uniform(scale_min, 1.0))
            aspect = math.exp(float(rng.uniform(*log_ratio)))
            bw = round(math.sqrt(target_area * aspect))
            bh = round(math.sqrt(target_area / aspect))
            if 0 < bw <= w and 0 < bh <= h:
                top = int(rng.integers(0, h - bh + 1))
                left = int(rng.integers(0, w - bw + 1))
                box = (top, left, bh, bw)
                break
        if box is None:  # the centred fallback; the image is square, so the whole image
            box = (0, 0, h, w)
        top, left, bh, bw = box
        crop = torch.from_numpy(np.ascontiguousarray(u8[i:i + 1, :, top:top + bh,
                                                        left:left + bw])).to(torch.float32)
        if (bh, bw) != (h, w):
            crop = F.interpolate(crop, size=(h, w), mode="bilinear", align_corners=False,
                                 antialias=True)
        out[i] = crop.round().clamp(0, 255).to(torch.uint8).numpy()[0]
    flip = rng.random(n) < 0.5
    out[flip] = out[flip][:, :, :, ::-1]
    return out


def random_erase(u8: np.ndarray, rng: np.random.Generator, p: float) -> np.ndarray:
    """Random erasing of each image of a uint8 batch [N, C, H, W], in place (and returned):
    the algorithm of vit::data::random_erasing (timm's RandomErasing, mode 'pixel', one box).
    With probability p, up to 10 tries of a box of area A * U(0.02, 1/3) and aspect
    exp(U(log 0.3, log(1/0.3))); the first that fits strictly inside the image is placed
    uniformly and filled with uniform random bytes."""
    n, c, h, w = u8.shape
    area = float(h * w)
    log_ratio = (math.log(0.3), math.log(1 / 0.3))
    for i in range(n):
        if not rng.random() < p:
            continue
        for _ in range(10):
            target_area = area * float(rng.uniform(0.02, 1 / 3))
            aspect = math.exp(float(rng.uniform(*log_ratio)))
            # Python's round is half-to-even, as the C++ round_half_even
            bh = round(math.sqrt(target_area * aspect))
            bw = round(math.sqrt(target_area / aspect))
            if not (bw < w and bh < h):
                continue
            top = int(rng.integers(0, h - bh + 1))
            left = int(rng.integers(0, w - bw + 1))
            u8[i, :, top:top + bh, left:left + bw] = rng.integers(0, 256, size=(c, bh, bw),
                                                                  dtype=np.uint8)
            break
    return u8


def smoothed_one_hot(labels: torch.Tensor, classes: int, smoothing: float) -> torch.Tensor:
    """[N, classes] targets: smoothing / classes everywhere, 1 - smoothing more on the label
    (the target F.cross_entropy's label_smoothing uses)."""
    off = smoothing / classes
    t = torch.full((labels.shape[0], classes), off, dtype=torch.float32)
    return t.scatter_(1, labels[:, None], 1.0 - smoothing + off)


def mix_batch(x: torch.Tensor, labels: torch.Tensor, classes: int, mixup_alpha: float,
              cutmix_alpha: float, mix_prob: float, smoothing: float, rng: np.random.Generator,
              switch_prob: float = 0.5) -> Tuple[torch.Tensor, torch.Tensor]:
    """(images, soft targets) of timm's Mixup in mode 'batch' (vit::train::mix_batch) on the
    normalised batch x [N, C, S, S]: one factor lam for the whole batch, image i mixed with
    image N-1-i. Not mixed (smoothed one-hot targets) with probability 1 - mix_prob."""
    targets = smoothed_one_hot(labels, classes, smoothing)
    if not rng.random() < mix_prob:
        return x, targets
    # CutMix or Mixup: a coin only when both are on
    cutmix = cutmix_alpha > 0 and (mixup_alpha <= 0 or rng.random() < switch_prob)
    alpha = cutmix_alpha if cutmix else mixup_alpha
    lam = float(rng.beta(alpha, alpha))
    flipped = x.flip(0)
    if cutmix:
        s = x.shape[-1]
        half = int(s * math.sqrt(1 - lam)) // 2
        cy, cx = int(rng.integers(0, s)), int(rng.integers(0, s))
        y0, y1 = min(max(cy - half, 0), s), min(max(cy + half, 0), s)
        x0, x1 = min(max(cx - half, 0), s), min(max(cx + half, 0), s)
        x = x.clone()
        x[:, :, y0:y1, x0:x1] = flipped[:, :, y0:y1, x0:x1]
        # the box was clipped at the border: lam is the share of the image actually kept
        lam = 1 - (y1 - y0) * (x1 - x0) / (s * s)
    else:
        x = lam * x + (1 - lam) * flipped
    return x, lam * targets + (1 - lam) * targets.flip(0)


def soft_cross_entropy(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum(targets * log_softmax(logits)) (timm's
    SoftTargetCrossEntropy; vit::train::cross_entropy with a target matrix)."""
    return -(targets * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def timm_init(a: Arch, pool: str = "token") -> Dict[str, torch.Tensor]:
    """timm's initialisation (see the header); draws from torch's global generator."""
    out = {}
    for name, shape in param_shapes(a, pool):
        t = torch.empty(shape, dtype=torch.float32)
        is_norm = ".norm" in "." + name or name.startswith("fc_norm.")
        if name == "cls_token":
            torch.nn.init.normal_(t, std=1e-6)
        elif name == "pos_embed" or (len(shape) >= 2):
            # Linear weights, the patch projection (as a Linear on the flattened patch),
            # pos_embed, head: truncated normal std 0.02, cut at +-2 (as timm)
            torch.nn.init.trunc_normal_(t, std=0.02)
        elif is_norm and name.endswith(".weight"):
            t.fill_(1.0)
        else:
            t.zero_()
        out[name] = t
    return out


def lr_at(step: int, total: int, warmup: int, lr: float, min_lr: float) -> float:
    """Warm-up from 0 over `warmup` steps, then a cosine from lr to min_lr at `total`."""
    if step < warmup:
        return lr * step / warmup
    t, period = step - warmup, total - warmup
    if t >= period:
        return min_lr
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t / period))


@torch.no_grad()
def evaluate(p, a: Arch, images: np.ndarray, labels: np.ndarray, norm: Normalize,
             pool: str = "token", batch: int = 500) -> torch.Tensor:
    """[summed cross-entropy without smoothing, top-1 hits, top-5 hits] over the images
    (float64, so that data-parallel processes can add theirs up)."""
    loss_sum, top1, top5 = 0.0, 0, 0
    for i in range(0, len(labels), batch):
        logits = vit_forward(p, a, norm(images[i:i + batch]), pool)
        y = torch.from_numpy(labels[i:i + batch])
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        best = logits.topk(min(5, logits.shape[1]), dim=1).indices
        top1 += int((best[:, 0] == y).sum())
        top5 += int((best == y[:, None]).any(dim=1).sum())
    return torch.tensor([loss_sum, top1, top5], dtype=torch.float64)


def blas_libraries() -> List[str]:
    """The BLAS shared libraries loaded in this process (Linux only; empty elsewhere)."""
    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f
                     if "blas" in line.lower() and ".so" in line.split()[-1]}
    except OSError:
        return []
    return sorted(paths)


def share(n: int, rank: int, world: int) -> slice:
    """Process `rank`'s contiguous part of n rows split between `world` processes."""
    return slice(rank * n // world, (rank + 1) * n // world)


def cmd_train(args) -> int:
    if args.processes < 1 or args.batch % args.processes:
        raise SystemExit("--processes must be at least 1 and divide --batch")
    if args.processes == 1:
        return train(args, 0)
    # Data parallel on one machine: every process draws the same batches and augmentations
    # (same seeds), runs its own contiguous slice of each batch, and the gradients are
    # averaged before clipping, so each step is the single-process step up to the order of
    # the float sums. Pays off for this small model, where torch gains little from threads.
    import torch.multiprocessing as mp
    with socket.socket() as s:  # a free port for the process group
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    mp.spawn(_train_worker, args=(args,), nprocs=args.processes)
    return 0


def _train_worker(rank: int, args) -> None:
    import torch.distributed as dist
    dist.init_process_group("gloo", rank=rank, world_size=args.processes)
    try:
        train(args, rank)
    finally:
        dist.destroy_process_group()


def train(args, rank: int) -> int:
    """The training run; with --processes P this is process `rank` of P (0 reports)."""
    world = args.processes
    if world > 1:
        import torch.distributed as dist
    report = print if rank == 0 else (lambda *_args, **_kwargs: None)
    t_start = time.perf_counter()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    train_x, train_y = load_cifar(os.path.join(args.data, "train.bin"), args.limit_train)
    test_x, test_y = load_cifar(os.path.join(args.data, "test.bin"), args.limit_test)
    steps_per_epoch = len(train_y) // args.batch
    if steps_per_epoch == 0:
        raise SystemExit(f"{len(train_y)} training images: not one batch of {args.batch}")
    total_steps = args.epochs * steps_per_epoch
    warmup_steps = int(round(args.warmup_epochs * steps_per_epoch))
    if args.epochs < 1:
        raise SystemExit("--epochs must be at least 1")
    if warmup_steps > total_steps:
        report(f"# note: --warmup-epochs {args.warmup_epochs} is more than --epochs "
               f"{args.epochs}: the whole run is warm-up", flush=True)
        warmup_steps = total_steps

    a = Arch(image_size=args.image_size, patch_size=args.patch_size, embed_dim=args.embed_dim,
             depth=args.depth, num_heads=args.heads,
             mlp_hidden=int(round(args.embed_dim * args.mlp_ratio)), num_classes=10)
    if a.image_size % a.patch_size or a.embed_dim % a.num_heads:
        raise SystemExit("image size must be a multiple of the patch size, "
                         "embed dim a multiple of heads")
    if not 0 <= args.random_erase <= 1 or not 0 <= args.mix_prob <= 1:
        raise SystemExit("--random-erase and --mix-prob must be in [0, 1]")
    if not 0 <= args.crop_scale <= 1:
        raise SystemExit("--crop-scale must be in [0, 1]")
    if args.mixup < 0 or args.cutmix < 0:
        raise SystemExit("--mixup and --cutmix must be >= 0")
    # as vit::train::MixOptions::enabled(): otherwise the plain label-smoothed loss
    mixing = args.mix_prob > 0 and (args.mixup > 0 or args.cutmix > 0)
    p = {k: v.requires_grad_(True) for k, v in timm_init(a, args.pool).items()}
    opt = make_adamw(p, args.lr, args.weight_decay)
    norm = Normalize(a.image_size)
    params = list(p.values())
    n_params = sum(t.numel() for t in params)
    report(f"# {len(train_y)} train / {len(test_y)} test images, {n_params} parameters, "
           f"{steps_per_epoch} steps per epoch, {world} process(es) x {args.threads} "
           f"thread(s), torch {torch.__version__}", flush=True)
    report(f"# model: width {a.embed_dim}, depth {a.depth}, heads {a.num_heads}, "
           f"mlp {a.mlp_hidden}, patch {a.patch_size}, image {a.image_size}, pool {args.pool}; "
           f"recipe: epochs {args.epochs}, warmup {args.warmup_epochs}, batch {args.batch}, "
           f"lr {args.lr:g}, min-lr {args.min_lr:g}, weight-decay {args.weight_decay:g}, "
           f"label-smoothing {args.label_smoothing:g}, clip-grad {args.clip_grad:g}, "
           f"random-erase {args.random_erase:g}, crop-scale {args.crop_scale:g}, "
           f"mixup {args.mixup:g}, cutmix {args.cutmix:g}, "
           f"mix-prob {args.mix_prob:g} (mixing {'on' if mixing else 'off'}), seed {args.seed}",
           flush=True)
    blas = blas_libraries()
    report(f"# BLAS: {', '.join(blas) or 'unknown'}", flush=True)
    if any(os.path.basename(os.path.dirname(b)) == "blas" for b in blas):
        report("# note: this is the slow reference BLAS (Debian's libblas3); an optimised one "
               "(libopenblas0-pthread) makes training several times faster", flush=True)

    csv = None
    if args.csv and rank == 0:
        csv = open(args.csv, "w")
        csv.write("epoch,train_loss,train_top1,val_loss,val_top1,val_top5,lr,images_per_s,"
                  "seconds\n")
    step = 0
    train_seconds = 0.0
    top1 = val_loss = val_top1 = val_top5 = float("nan")
    lr = 0.0
    mine = share(args.batch, rank, world)  # this process's rows of every batch
    for epoch in range(1, args.epochs + 1):
        order = rng.permutation(len(train_y))
        loss_sum, correct = 0.0, 0
        t0 = time.perf_counter()
        for b in range(steps_per_epoch):
            idx = order[b * args.batch:(b + 1) * args.batch]
            if args.crop_scale > 0:
                u8 = random_resized_crop(train_x[idx], rng, args.crop_scale)
            else:
                u8 = augment(train_x[idx], rng)
            if args.random_erase > 0:  # no draws when off: the old runs stay reproducible
                u8 = random_erase(u8, rng, args.random_erase)
            x = norm(u8)
            y = torch.from_numpy(train_y[idx])
            lr = lr_at(step, total_steps, warmup_steps, args.lr, args.min_lr)
            for g in opt.param_groups:
                g["lr"] = lr
            if mixing:
                x, targets = mix_batch(x, y, a.num_classes, args.mixup, args.cutmix,
                                       args.mix_prob, args.label_smoothing, rng)
                logits = vit_forward(p, a, x[mine], args.pool)
                loss = soft_cross_entropy(logits, targets[mine])
            else:
                logits = vit_forward(p, a, x[mine], args.pool)
                loss = F.cross_entropy(logits, y[mine], label_smoothing=args.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            batch_correct = (logits.detach().argmax(dim=1) == y[mine]).sum()  # original labels
            if world > 1:
                # mean gradient of the whole batch = mean of the slices' mean gradients
                flat = torch.cat([t.grad.reshape(-1) for t in params] +
                                 [loss.detach().reshape(1), batch_correct.reshape(1).float()])
                dist.all_reduce(flat)
                offset = 0
                for t in params:
                    t.grad.copy_(flat[offset:offset + t.numel()].view_as(t.grad) / world)
                    offset += t.numel()
                loss, batch_correct = flat[offset] / world, flat[offset + 1]
            if args.clip_grad > 0:
                torch.nn.utils.clip_grad_norm_(params, args.clip_grad)
            opt.step()
            loss_sum += float(loss)
            correct += int(batch_correct)
            step += 1
        seconds = time.perf_counter() - t0
        train_seconds += seconds
        images_per_s = steps_per_epoch * args.batch / seconds
        # each process evaluates its share of the test images; the sums are added up
        part = share(len(test_y), rank, world)
        sums = evaluate(p, a, test_x[part], test_y[part], norm, args.pool)
        if world > 1:
            dist.all_reduce(sums)
        val_loss, val_top1, val_top5 = (sums / max(1, len(test_y))).tolist()
        top1 = 100 * val_top1
        train_loss = loss_sum / steps_per_epoch
        train_top1 = correct / (steps_per_epoch * args.batch)
        report(f"epoch {epoch:3d}  train loss {train_loss:.4f}  {images_per_s:8.1f} images/s  "
               f"test top-1 {top1:6.2f}%  (train top-1 {100 * train_top1:.2f}%, test loss "
               f"{val_loss:.4f}, test top-5 {100 * val_top5:.2f}%, lr {lr:.2e})", flush=True)
        if csv:
            csv.write(f"{epoch},{train_loss:.6f},{train_top1:.6f},{val_loss:.6f},{val_top1:.6f},"
                      f"{val_top5:.6f},{lr:.6g},{images_per_s:.2f},"
                      f"{time.perf_counter() - t_start:.2f}\n")
            csv.flush()
    if csv:
        csv.close()
    result = {
        "epochs": args.epochs, "test_top1": round(top1, 2), "val_top1": val_top1,
        "val_top5": val_top5,
        "images_per_s": round(total_steps * args.batch / train_seconds, 2),
        "seconds": round(time.perf_counter() - t_start, 2),
        "train_seconds": round(train_seconds, 2), "steps": total_steps,
        "train_images": len(train_y), "test_images": len(test_y), "threads": args.threads,
        "torch": torch.__version__, "pool": args.pool, "random_erase": args.random_erase,
        "crop_scale": args.crop_scale,
        "mixup": args.mixup, "cutmix": args.cutmix, "mix_prob": args.mix_prob,
    }
    report(json.dumps(result), flush=True)
    return 0


# ----------------------------------------------------------------------------------------


def main(argv: List[str]) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="command", required=True)
    s = sub.add_parser("step", help="write the one-training-step fixture")
    s.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                 "..", "data", "train", "step.safetensors"))
    t = sub.add_parser("train", help="train the CIFAR-10 recipe")
    t.add_argument("--data", required=True, help="folder with train.bin and test.bin")
    t.add_argument("--epochs", type=int, required=True)
    t.add_argument("--image-size", type=int, default=32)
    t.add_argument("--patch-size", type=int, default=4)
    t.add_argument("--embed-dim", type=int, default=192)
    t.add_argument("--depth", type=int, default=6)
    t.add_argument("--heads", type=int, default=3)
    t.add_argument("--mlp-ratio", type=float, default=2.0)
    t.add_argument("--pool", choices=POOLS, default="token",
                   help="token: class token + final norm; avg: mean of the patch tokens + fc_norm")
    t.add_argument("--batch", type=int, default=128)
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--min-lr", type=float, default=1e-5)
    t.add_argument("--warmup-epochs", type=float, default=2)
    t.add_argument("--weight-decay", type=float, default=0.05)
    t.add_argument("--label-smoothing", type=float, default=0.1)
    t.add_argument("--clip-grad", type=float, default=1.0)
    t.add_argument("--random-erase", type=float, default=0.0,
                   help="random erasing probability per training image (0: off)")
    t.add_argument("--crop-scale", type=float, default=0.0,
                   help="random resized crops of at least this area fraction instead of "
                        "pad-and-crop (0: off)")
    t.add_argument("--mixup", type=float, default=0.0, help="Mixup Beta alpha (0: off)")
    t.add_argument("--cutmix", type=float, default=0.0, help="CutMix Beta alpha (0: off)")
    t.add_argument("--mix-prob", type=float, default=1.0,
                   help="probability of mixing a batch (with --mixup / --cutmix)")
    t.add_argument("--seed", type=int, default=0)
    t.add_argument("--threads", type=int, default=2, help="threads per process")
    t.add_argument("--processes", type=int, default=1,
                   help="data-parallel processes, each with --threads threads (default 1)")
    t.add_argument("--limit-train", type=int, default=0, help="first N training images (0: all)")
    t.add_argument("--limit-test", type=int, default=0, help="first N test images (0: all)")
    t.add_argument("--csv", default="", help="also write the per-epoch lines to this CSV file")
    args = ap.parse_args(argv)
    return cmd_step(args) if args.command == "step" else cmd_train(args)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

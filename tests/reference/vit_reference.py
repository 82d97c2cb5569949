#!/usr/bin/python3
"""Independent reference forward pass of a Vision Transformer (ViT / DeiT), plus a
minimal safetensors reader/writer.

Written from the math in tests/data/README (the fixture README): it does not import
timm, torchvision.models or transformers. Only torch primitives are used
(torch.nn.functional.layer_norm / linear / softmax / gelu / interpolate), so the
result is bit-for-bit reproducible on one machine with a fixed thread count.

Weights use timm's key names (see `to_timm_names` for torchvision / HF checkpoints):

    patch_embed.proj.weight [D,C,P,P]   patch_embed.proj.bias [D]
    cls_token [1,1,D]  (optional)       dist_token [1,1,D]   (optional, DeiT)
    pos_embed [1,T',D] (absent for a fixed sin-cos table)
    blocks.i.norm1.{weight,bias}        blocks.i.attn.qkv.weight [3D,D]  (.bias optional)
    blocks.i.attn.proj.{weight,bias}    blocks.i.norm2.{weight,bias}
    blocks.i.mlp.fc1.{weight,bias}      blocks.i.mlp.fc2.{weight,bias}
    norm.{weight,bias} (token pooling) or fc_norm.{weight,bias} (avg pooling)
    head.{weight,bias}                  head_dist.{weight,bias}  (DeiT)

Command line:  /usr/bin/python3 tests/reference/vit_reference.py [FIXTURE_DIR ...]
checks this reference against the library-produced fixtures (default: the four cases
in tests/data/) and prints the max differences per stored tensor.
"""

import json
import math
import os
import struct
import sys
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F

# ----------------------------------------------------------------------------------------
# safetensors (8-byte little-endian header length, JSON header, raw little-endian data)
# ----------------------------------------------------------------------------------------

_ST_DTYPES = {
    "F64": np.dtype("<f8"),
    "F32": np.dtype("<f4"),
    "F16": np.dtype("<f2"),
    "I64": np.dtype("<i8"),
    "I32": np.dtype("<i4"),
    "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"),
    "U8": np.dtype("u1"),
    "BOOL": np.dtype("?"),
}
_NP_TO_ST = {v: k for k, v in _ST_DTYPES.items()}


def read_safetensors(path: str) -> Tuple[Dict[str, np.ndarray], Dict[str, str]]:
    """Return ({name: array}, metadata). Arrays are copies in native byte order."""
    with open(path, "rb") as f:
        blob = f.read()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8:8 + header_len].decode("utf-8"))
    data = memoryview(blob)[8 + header_len:]
    metadata = header.pop("__metadata__", {}) or {}
    tensors = {}
    for name, info in header.items():
        dtype = _ST_DTYPES[info["dtype"]]
        begin, end = info["data_offsets"]
        count = int(np.prod(info["shape"], dtype=np.int64))
        if end - begin != count * dtype.itemsize:
            raise ValueError(f"{path}: {name}: size mismatch")
        arr = np.frombuffer(data[begin:end], dtype=dtype, count=count)
        tensors[name] = arr.reshape(info["shape"]).astype(dtype.newbyteorder("="))
    return tensors, metadata


def write_safetensors(path: str, tensors: Dict[str, np.ndarray],
                      metadata: Optional[Dict[str, str]] = None) -> None:
    """Deterministic writer. Like the `safetensors` library: tensors sorted by dtype
    (wider first, so F64 data stays 8-byte aligned) then by name, compact JSON header
    padded with spaces to a multiple of 8 bytes."""
    items = []
    for name, arr in tensors.items():
        arr = np.ascontiguousarray(arr)
        dt = arr.dtype.newbyteorder("<") if arr.dtype.itemsize > 1 else arr.dtype
        arr = arr.astype(dt, copy=False)
        st = _NP_TO_ST[np.dtype(dt)]
        items.append((name, st, arr))
    items.sort(key=lambda it: (-_ST_DTYPES[it[1]].itemsize, it[0]))
    header = {}
    if metadata is not None:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    offset = 0
    chunks = []
    for name, st, arr in items:
        raw = arr.tobytes()
        header[name] = {"dtype": st, "shape": list(arr.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        offset += len(raw)
        chunks.append(raw)
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * ((8 - len(hbytes) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(hbytes)))
        f.write(hbytes)
        for c in chunks:
            f.write(c)


# ----------------------------------------------------------------------------------------
# configuration
# ----------------------------------------------------------------------------------------

@dataclass
class ViTConfig:
    image_size: int            # run resolution (square)
    patch_size: int
    dim: int
    depth: int
    heads: int
    mlp_dim: int
    num_classes: int
    in_chans: int = 3
    qkv_bias: bool = True
    layer_norm_eps: float = 1e-6
    class_token: bool = True
    distill_token: bool = False
    pooling: str = "token"     # 'token' (token 0 after final norm) or 'avg' (patch tokens)
    fc_norm: bool = False      # avg pooling: LayerNorm after pooling, no final norm
    pos_embed: str = "learned"  # 'learned' (pos_embed tensor) or 'sincos' (fixed table)
    pos_embed_grid: Optional[Tuple[int, int]] = None  # grid of the stored table

    @property
    def grid(self) -> int:
        assert self.image_size % self.patch_size == 0
        return self.image_size // self.patch_size

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.class_token) + int(self.distill_token)

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.grid * self.grid

    @property
    def final_norm(self) -> bool:
        return not self.fc_norm


def config_from_fixture_json(cfg: dict) -> ViTConfig:
    """Build a ViTConfig from the library-neutral config.json of the fixtures."""
    pooling = {"cls": "token", "token": "token", "avg": "avg"}[cfg["pooling"]]
    grid = cfg.get("pos_embed_grid")
    return ViTConfig(
        image_size=cfg["image_size"], patch_size=cfg["patch_size"], dim=cfg["dim"],
        depth=cfg["depth"], heads=cfg["heads"], mlp_dim=cfg["mlp_dim"],
        num_classes=cfg["num_classes"], in_chans=cfg.get("in_chans", 3),
        qkv_bias=cfg["qkv_bias"], layer_norm_eps=cfg["layer_norm_eps"],
        class_token=cfg["class_token"], distill_token=cfg.get("distill_token", False),
        pooling=pooling, fc_norm=cfg["fc_norm"], pos_embed=cfg.get("pos_embed", "learned"),
        pos_embed_grid=tuple(grid) if grid else None)


# ----------------------------------------------------------------------------------------
# position embeddings
# ----------------------------------------------------------------------------------------

def sincos_2d_table(dim: int, grid: int, num_prefix_tokens: int) -> np.ndarray:
    """Fixed 2-D sin-cos table (MAE layout) as float64, shape [1, prefix + grid*grid, dim].

    omega_i = 1 / 10000^(i / (dim/4)), i = 0 .. dim/4-1. For the patch at row y, column x
    (token index y*grid + x): features [0, dim/2) = [sin(x*omega), cos(x*omega)],
    features [dim/2, dim) = [sin(y*omega), cos(y*omega)]. Prefix-token rows are zero."""
    assert dim % 4 == 0, "sin-cos table needs dim divisible by 4"
    quarter = dim // 4
    omega = 1.0 / (10000.0 ** (np.arange(quarter, dtype=np.float64) / quarter))
    ys, xs = np.meshgrid(np.arange(grid, dtype=np.float64),
                         np.arange(grid, dtype=np.float64), indexing="ij")
    x_ang = xs.reshape(-1, 1) * omega[None, :]   # [g*g, D/4], row-major tokens
    y_ang = ys.reshape(-1, 1) * omega[None, :]
    table = np.concatenate([np.sin(x_ang), np.cos(x_ang), np.sin(y_ang), np.cos(y_ang)], axis=1)
    prefix = np.zeros((num_prefix_tokens, dim), dtype=np.float64)
    return np.concatenate([prefix, table], axis=0)[None]


def resample_pos_table(table: torch.Tensor, old_grid: Tuple[int, int],
                       new_grid: Tuple[int, int], num_prefix_rows: int) -> torch.Tensor:
    """What timm does when a checkpoint is used at another grid: keep the prefix rows,
    resize the [1, D, gh, gw] grid with bicubic + antialias (align_corners=False),
    computed in float32 and cast back to the input dtype."""
    if tuple(old_grid) == tuple(new_grid):
        return table
    dtype = table.dtype
    dim = table.shape[-1]
    prefix, grid_rows = table[:, :num_prefix_rows], table[:, num_prefix_rows:]
    assert grid_rows.shape[1] == old_grid[0] * old_grid[1]
    img = grid_rows.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=tuple(new_grid), mode="bicubic", antialias=True,
                        align_corners=False)
    grid_rows = img.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim).to(dtype)
    return torch.cat([prefix.to(dtype), grid_rows], dim=1)


def position_table(weights: Dict[str, torch.Tensor], cfg: ViTConfig,
                   dtype: torch.dtype) -> torch.Tensor:
    """The [1, T, D] table actually added to the tokens, in `dtype`.

    learned: weights['pos_embed'] (float32 in the file) resampled in float32 when its grid
    differs from the run grid, then cast to dtype (so a float64 run uses the float32
    resample, as timm would). sincos: computed in float64, then cast."""
    g = cfg.grid
    if cfg.pos_embed == "sincos":
        return torch.from_numpy(sincos_2d_table(cfg.dim, g, cfg.num_prefix_tokens)).to(dtype)
    table = weights["pos_embed"]
    rows = table.shape[1]
    # prefix rows present in the stored table (timm: 0 when there are no prefix tokens)
    prefix_rows = cfg.num_prefix_tokens
    old = cfg.pos_embed_grid
    if old is None:
        side = math.isqrt(rows - prefix_rows)
        old = (side, side)
    assert rows == prefix_rows + old[0] * old[1], "pos_embed rows do not match its grid"
    table = resample_pos_table(table.float(), old, (g, g), prefix_rows)
    return table.to(dtype)


# ----------------------------------------------------------------------------------------
# forward pass
# ----------------------------------------------------------------------------------------

def patchify(pixels: torch.Tensor, p: int) -> torch.Tensor:
    """[N, C, S, S] -> [N, g*g, C*p*p]; patches row-major, each flattened as (c, dy, dx)
    to match a conv weight [D, C, p, p] flattened to [D, C*p*p]."""
    n, c, h, w = pixels.shape
    gh, gw = h // p, w // p
    x = pixels.reshape(n, c, gh, p, gw, p)
    x = x.permute(0, 2, 4, 1, 3, 5)          # n, gy, gx, c, dy, dx
    return x.reshape(n, gh * gw, c * p * p)


def forward(weights: Dict[str, torch.Tensor], cfg: ViTConfig, pixels: torch.Tensor,
            dtype: torch.dtype = torch.float32,
            pos_table: Optional[torch.Tensor] = None) -> Dict[str, torch.Tensor]:
    """Run the model. `weights` are float32 tensors with timm names; they and the pixels
    are cast to `dtype` (float32 or float64). `pos_table` overrides the position table
    (default: `position_table(weights, cfg, dtype)`). Returns every intermediate we store."""
    w = {k: v.to(dtype) for k, v in weights.items()}
    x_in = pixels.to(dtype)
    n = x_in.shape[0]
    d, heads = cfg.dim, cfg.heads
    hd = d // heads
    eps = cfg.layer_norm_eps
    out: Dict[str, torch.Tensor] = {}

    # patch embedding (a conv with stride = kernel = patch size, written as a matmul)
    patches = patchify(x_in, cfg.patch_size)
    proj_w = w["patch_embed.proj.weight"].reshape(d, -1)
    x = F.linear(patches, proj_w, w["patch_embed.proj.bias"])          # [N, g*g, D]

    # prefix tokens in front: class, then distillation
    prefix = []
    if cfg.class_token:
        prefix.append(w["cls_token"].expand(n, 1, d))
    if cfg.distill_token:
        prefix.append(w["dist_token"].expand(n, 1, d))
    x = torch.cat(prefix + [x], dim=1)

    pos = position_table(weights, cfg, dtype) if pos_table is None else pos_table.to(dtype)
    assert pos.shape == (1, cfg.num_tokens, d), (pos.shape, cfg.num_tokens)
    out["pos_embed_used"] = pos
    x = x + pos
    out["embeddings"] = x
    t = x.shape[1]

    for i in range(cfg.depth):
        b = f"blocks.{i}."
        # attention
        y = F.layer_norm(x, (d,), w[b + "norm1.weight"], w[b + "norm1.bias"], eps)
        qkv = F.linear(y, w[b + "attn.qkv.weight"], w.get(b + "attn.qkv.bias"))
        qkv = qkv.reshape(n, t, 3, heads, hd).permute(2, 0, 3, 1, 4)    # 3, N, H, T, hd
        q, k, v = qkv[0], qkv[1], qkv[2]
        scores = torch.matmul(q, k.transpose(-2, -1)) * (hd ** -0.5)
        probs = F.softmax(scores, dim=-1)
        ctx = torch.matmul(probs, v)                                    # N, H, T, hd
        ctx = ctx.transpose(1, 2).reshape(n, t, d)                      # heads concatenated
        x = x + F.linear(ctx, w[b + "attn.proj.weight"], w[b + "attn.proj.bias"])
        # MLP
        y = F.layer_norm(x, (d,), w[b + "norm2.weight"], w[b + "norm2.bias"], eps)
        y = F.gelu(F.linear(y, w[b + "mlp.fc1.weight"], w[b + "mlp.fc1.bias"]))
        x = x + F.linear(y, w[b + "mlp.fc2.weight"], w[b + "mlp.fc2.bias"])
        out[f"hidden_states.{i}"] = x
        if i == cfg.depth - 1:
            out["attn_probs.last"] = probs

    if cfg.final_norm:
        x = F.layer_norm(x, (d,), w["norm.weight"], w["norm.bias"], eps)
    out["last_hidden_state"] = x

    npt = cfg.num_prefix_tokens
    if cfg.pooling == "avg":
        feat = x[:, npt:].mean(dim=1)
    elif cfg.distill_token:
        feat = None                      # handled below (two tokens, two heads)
    else:
        feat = x[:, 0]
    if cfg.fc_norm:
        feat = F.layer_norm(feat, (d,), w["fc_norm.weight"], w["fc_norm.bias"], eps)

    if cfg.distill_token and cfg.pooling == "token":
        tok, tok_dist = x[:, 0], x[:, 1]
        out["pre_logits"] = (tok + tok_dist) / 2
        logits = (F.linear(tok, w["head.weight"], w["head.bias"])
                  + F.linear(tok_dist, w["head_dist.weight"], w["head_dist.bias"])) / 2
    else:
        out["pre_logits"] = feat
        logits = F.linear(feat, w["head.weight"], w["head.bias"])
    out["logits"] = logits
    return out


# ----------------------------------------------------------------------------------------
# other checkpoint layouts -> timm names (used for the optional validation)
# ----------------------------------------------------------------------------------------

def to_timm_names(weights: Dict[str, np.ndarray], naming: str, depth: int) -> Dict[str, np.ndarray]:
    if naming == "timm":
        return dict(weights)
    out = {}
    if naming == "torchvision":
        out["patch_embed.proj.weight"] = weights["conv_proj.weight"]
        out["patch_embed.proj.bias"] = weights["conv_proj.bias"]
        out["cls_token"] = weights["class_token"]
        out["pos_embed"] = weights["encoder.pos_embedding"]
        for i in range(depth):
            s, b = f"encoder.layers.encoder_layer_{i}.", f"blocks.{i}."
            fc = "mlp.0" if s + "mlp.0.weight" in weights else "mlp.linear_1"
            fc2 = "mlp.3" if s + "mlp.3.weight" in weights else "mlp.linear_2"
            for wb in ("weight", "bias"):
                out[b + "norm1." + wb] = weights[s + "ln_1." + wb]
                out[b + "attn.proj." + wb] = weights[s + "self_attention.out_proj." + wb]
                out[b + "norm2." + wb] = weights[s + "ln_2." + wb]
                out[b + "mlp.fc1." + wb] = weights[f"{s}{fc}.{wb}"]
                out[b + "mlp.fc2." + wb] = weights[f"{s}{fc2}.{wb}"]
            out[b + "attn.qkv.weight"] = weights[s + "self_attention.in_proj_weight"]
            if s + "self_attention.in_proj_bias" in weights:
                out[b + "attn.qkv.bias"] = weights[s + "self_attention.in_proj_bias"]
        for wb in ("weight", "bias"):
            out["norm." + wb] = weights["encoder.ln." + wb]
            out["head." + wb] = weights["heads.head." + wb]
        return out
    if naming == "hf":
        p = "vit." if "vit.embeddings.cls_token" in weights else ""
        e = p + "embeddings."
        out["patch_embed.proj.weight"] = weights[e + "patch_embeddings.projection.weight"]
        out["patch_embed.proj.bias"] = weights[e + "patch_embeddings.projection.bias"]
        out["cls_token"] = weights[e + "cls_token"]
        out["pos_embed"] = weights[e + "position_embeddings"]
        for i in range(depth):
            s, b = f"{p}encoder.layer.{i}.", f"blocks.{i}."
            a = s + "attention.attention."
            out[b + "attn.qkv.weight"] = np.concatenate(
                [weights[a + n + ".weight"] for n in ("query", "key", "value")], axis=0)
            if a + "query.bias" in weights:
                out[b + "attn.qkv.bias"] = np.concatenate(
                    [weights[a + n + ".bias"] for n in ("query", "key", "value")], axis=0)
            for wb in ("weight", "bias"):
                out[b + "norm1." + wb] = weights[s + "layernorm_before." + wb]
                out[b + "attn.proj." + wb] = weights[s + "attention.output.dense." + wb]
                out[b + "norm2." + wb] = weights[s + "layernorm_after." + wb]
                out[b + "mlp.fc1." + wb] = weights[s + "intermediate.dense." + wb]
                out[b + "mlp.fc2." + wb] = weights[s + "output.dense." + wb]
        for wb in ("weight", "bias"):
            out["norm." + wb] = weights[p + "layernorm." + wb]
            out["head." + wb] = weights["classifier." + wb]
        return out
    raise ValueError(f"unknown naming {naming!r}")


def load_weights(path: str, naming: str = "timm", depth: int = 0) -> Dict[str, torch.Tensor]:
    raw, _ = read_safetensors(path)
    raw = to_timm_names(raw, naming, depth)
    return {k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in raw.items()}


# ----------------------------------------------------------------------------------------
# validation against the library-produced fixtures
# ----------------------------------------------------------------------------------------

# (atol, rtol) from the fixture README
TOLERANCES = {
    "pixel_values": (1e-6, 0.0),
    "embeddings": (1e-4, 1e-5),
    "hidden_states": (1e-4, 1e-5),
    "last_hidden_state": (1e-4, 1e-5),
    "attn_probs.last": (1e-5, 0.0),
    "pre_logits": (1e-4, 1e-5),
    "logits": (1e-4, 1e-5),
    "logits_f64": (1e-4, 1e-5),      # float32 run vs float64 reference
    "f64_vs_f64": (1e-9, 0.0),       # float64 run vs float64 reference
}


def _maxdiff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.max(np.abs(a.astype(np.float64) - b.astype(np.float64))))


def validate_case(case_dir: str, verbose: bool = True) -> Tuple[bool, Dict[str, float]]:
    with open(os.path.join(case_dir, "config.json")) as f:
        cj = json.load(f)
    cfg = config_from_fixture_json(cj)
    weights = load_weights(os.path.join(case_dir, "model.safetensors"), cj["naming"], cfg.depth)
    exp, _ = read_safetensors(os.path.join(case_dir, "expected.safetensors"))
    pixels = torch.from_numpy(exp["pixel_values"])
    with torch.no_grad():
        o32 = forward(weights, cfg, pixels, torch.float32)
        o64 = forward(weights, cfg, pixels, torch.float64)
    results: Dict[str, float] = {}
    ok = True

    def check(label, got, ref, tol_key):
        nonlocal ok
        atol, rtol = TOLERANCES[tol_key]
        diff = _maxdiff(got, ref)
        limit = atol + rtol * float(np.max(np.abs(ref)))
        passed = diff <= limit
        ok &= passed
        results[label] = diff
        if verbose:
            print(f"  {label:34s} max|diff| {diff:.3e}  (limit {limit:.1e}) "
                  f"{'ok' if passed else 'FAIL'}")

    for name, ref in sorted(exp.items()):
        if name in ("image_u8", "pixel_values") or name.endswith("_f64"):
            continue
        if name == "pos_embed_used":
            key = "embeddings"
        else:
            key = "hidden_states" if name.startswith("hidden_states.") else name
        check(name, o32[name].numpy(), ref, key)
    if "logits_f64" in exp:
        check("logits(f32 run) vs logits_f64", o32["logits"].numpy(), exp["logits_f64"], "logits_f64")
        check("logits_f64", o64["logits"].numpy(), exp["logits_f64"], "f64_vs_f64")
    if "pre_logits_f64" in exp:
        check("pre_logits_f64", o64["pre_logits"].numpy(), exp["pre_logits_f64"], "f64_vs_f64")
    return ok, results


def main(argv: List[str]) -> int:
    torch.set_num_threads(1)
    here = os.path.dirname(os.path.abspath(__file__))
    dirs = argv or [os.path.join(here, "..", "data", c) for c in (
        "timm_vit_tiny_p16_224", "timm_vit_small_p32_96", "torchvision_vit_p16_64",
        "hf_vit_p16_32")]
    dirs = [d for d in dirs if os.path.isfile(os.path.join(d, "config.json"))]
    all_ok = True
    for d in dirs:
        print(os.path.basename(os.path.normpath(d)))
        ok, _ = validate_case(d)
        all_ok &= ok
    print("ALL OK" if all_ok else "SOME CHECKS FAILED")
    return 0 if all_ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

#!/usr/bin/env python3
"""Writes the seed corpora of the fuzz targets (fuzz/corpus/<target>/).

Seeds are small on purpose: the fuzzer mutates every byte it is given, and a
2 MB checkpoint would spend its time flipping bits in weights. So the
checkpoint seeds are tiny models (image 8, patch 4, width 8, one block) in
each naming scheme we read (timm, Hugging Face, torchvision), written here
with the standard library only; the config and image seeds are copies of the
real files in tests/data. Run from anywhere: python3 fuzz/make_seeds.py
"""
import json
import os
import random
import shutil
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
DATA = os.path.join(ROOT, "tests", "data")
CORPUS = os.path.join(HERE, "corpus")

D, H, C, P, GRID = 8, 16, 3, 4, 2  # width, MLP hidden, classes, patch, grid
T = 1 + GRID * GRID  # tokens: class token + patches


def timm_tensors():
    t = {
        "cls_token": [1, 1, D],
        "pos_embed": [1, T, D],
        "patch_embed.proj.weight": [D, 3, P, P],
        "patch_embed.proj.bias": [D],
        "norm.weight": [D],
        "norm.bias": [D],
        "head.weight": [C, D],
        "head.bias": [C],
    }
    b = "blocks.0."
    for ln in ("norm1", "norm2"):
        t[b + ln + ".weight"] = [D]
        t[b + ln + ".bias"] = [D]
    t[b + "attn.qkv.weight"] = [3 * D, D]
    t[b + "attn.qkv.bias"] = [3 * D]
    t[b + "attn.proj.weight"] = [D, D]
    t[b + "attn.proj.bias"] = [D]
    t[b + "mlp.fc1.weight"] = [H, D]
    t[b + "mlp.fc1.bias"] = [H]
    t[b + "mlp.fc2.weight"] = [D, H]
    t[b + "mlp.fc2.bias"] = [D]
    return t


def hf_tensors():
    e, l = "vit.embeddings.", "vit.encoder.layer.0."
    t = {
        e + "cls_token": [1, 1, D],
        e + "position_embeddings": [1, T, D],
        e + "patch_embeddings.projection.weight": [D, 3, P, P],
        e + "patch_embeddings.projection.bias": [D],
        "vit.layernorm.weight": [D],
        "vit.layernorm.bias": [D],
        "classifier.weight": [C, D],
        "classifier.bias": [C],
    }
    for name in ("query", "key", "value"):
        t[l + "attention.attention." + name + ".weight"] = [D, D]
        t[l + "attention.attention." + name + ".bias"] = [D]
    for name, shape in (("attention.output.dense", [D, D]), ("intermediate.dense", [H, D]),
                        ("output.dense", [D, H])):
        t[l + name + ".weight"] = shape
        t[l + name + ".bias"] = [shape[0]]
    for ln in ("layernorm_before", "layernorm_after"):
        t[l + ln + ".weight"] = [D]
        t[l + ln + ".bias"] = [D]
    return t


def torchvision_tensors():
    l = "encoder.layers.encoder_layer_0."
    t = {
        "class_token": [1, 1, D],
        "encoder.pos_embedding": [1, T, D],
        "conv_proj.weight": [D, 3, P, P],
        "conv_proj.bias": [D],
        "encoder.ln.weight": [D],
        "encoder.ln.bias": [D],
        "heads.head.weight": [C, D],
        "heads.head.bias": [C],
    }
    for ln in ("ln_1", "ln_2"):
        t[l + ln + ".weight"] = [D]
        t[l + ln + ".bias"] = [D]
    t[l + "self_attention.in_proj_weight"] = [3 * D, D]
    t[l + "self_attention.in_proj_bias"] = [3 * D]
    t[l + "self_attention.out_proj.weight"] = [D, D]
    t[l + "self_attention.out_proj.bias"] = [D]
    t[l + "mlp.0.weight"] = [H, D]
    t[l + "mlp.0.bias"] = [H]
    t[l + "mlp.3.weight"] = [D, H]
    t[l + "mlp.3.bias"] = [D]
    return t


def encode(value, dtype):
    if dtype == "F32":
        return struct.pack("<f", value)
    if dtype == "F64":
        return struct.pack("<d", value)
    if dtype == "F16":
        return struct.pack("<e", value)
    if dtype == "BF16":
        return struct.pack("<f", value)[2:]  # the high half of the float32
    raise ValueError(dtype)


def safetensors(shapes, dtype, rng, metadata=None):
    header, data = {}, bytearray()
    if metadata:
        header["__metadata__"] = metadata
    for name in sorted(shapes):
        n = 1
        for d in shapes[name]:
            n *= d
        begin = len(data)
        for _ in range(n):
            data += encode(rng.uniform(-0.5, 0.5), dtype)
        header[name] = {"dtype": dtype, "shape": shapes[name], "data_offsets": [begin, len(data)]}
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)  # the writers pad the header to 8 bytes
    return struct.pack("<Q", len(text)) + text + bytes(data)


def write(target, name, blob):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, name), "wb") as f:
        f.write(blob)


def copy(target, source, name=None):
    folder = os.path.join(CORPUS, target)
    os.makedirs(folder, exist_ok=True)
    shutil.copyfile(source, os.path.join(folder, name or os.path.basename(source)))


def main():
    rng = random.Random(0)
    if os.path.isdir(CORPUS):
        shutil.rmtree(CORPUS)
    models = {"timm": timm_tensors(), "hf": hf_tensors(), "torchvision": torchvision_tensors()}
    for naming, shapes in models.items():
        write("checkpoint", naming + ".safetensors", safetensors(shapes, "F32", rng, {"format": "pt"}))
    write("checkpoint", "timm_bf16.safetensors", safetensors(models["timm"], "BF16", rng))
    small = {"a": [2, 3], "b": [4], "scalar": [], "empty": [0, 5]}
    for dtype in ("F32", "F16", "BF16", "F64"):
        write("safetensors", dtype.lower() + ".safetensors",
              safetensors(small, dtype, rng, {"note": "seed"}))
    write("safetensors", "tiny_timm.safetensors", safetensors(models["timm"], "F16", rng))

    # Sidecar configs: the real timm / Hugging Face files of the fixtures. The
    # first byte of a config input picks the reader (see fuzz_config.cpp).
    configs = [
        ("c", "timm_vit_small_p32_96/timm_config.json"),
        ("c", "variants/sincos/timm_config.json"),
        ("c", "variants/deit_distilled/timm_config.json"),
        ("c", "hf_vit_p16_32/hf_config.json"),
        ("p", "timm_vit_tiny_p16_224/preprocess/preprocess.json"),
    ]
    for i, (kind, rel) in enumerate(configs):
        with open(os.path.join(DATA, rel), "rb") as f:
            write("config", "%d_%s" % (i, os.path.basename(rel)), kind.encode() + f.read())
    write("config", "preprocessor.json", b"p" + json.dumps({
        "do_normalize": True, "do_resize": True, "image_mean": [0.5, 0.5, 0.5],
        "image_std": [0.5, 0.5, 0.5], "resample": 2, "size": {"height": 8, "width": 8}}).encode())

    # Images: one of each format the decoders take, all small.
    for name in ("anim.gif", "gray.jpg", "gray.pgm", "gray1.png", "gray16.png", "palette_trns.png",
                 "photo.jpg", "rgb.bmp", "rgb.tga", "rgb_rle.tga", "rgba.png", "rgb.ppm"):
        copy("image", os.path.join(DATA, "images", name))

    # gzip streams (stored, fixed and dynamic Huffman blocks, several members).
    for name in ("dynamic.gz", "fixed.gz", "multiblock.gz", "stored.gz", "named.txt.gz",
                 "tiny-images-idx3-ubyte.gz"):
        copy("gzip", os.path.join(DATA, "data", name))


if __name__ == "__main__":
    main()

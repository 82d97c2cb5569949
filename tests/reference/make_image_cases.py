#!/usr/bin/python3
"""Generate tests/data/images/: small image files and what Pillow makes of them.

    /usr/bin/python3 tests/reference/make_image_cases.py [--out DIR]

Needs numpy and Pillow (Debian: python3-pil; the stored references were made with
Pillow 9.4). Deterministic: pixels come from numpy.random.RandomState with fixed
seeds and every file is written the same way on every run.

Writes, into DIR (default tests/data/images):
  * test images: 8/16-bit PNGs of every colour type, palette PNGs (4-bit, and one
    with a tRNS chunk), 1-bit and 4-bit gray PNGs, JPEG (colour 4:2:0 and gray),
    BMP, TGA (raw and RLE), a 2-frame GIF, PPM and PGM, a 1x1 PNG;
  * broken files: truncated.png, corrupt.png (damaged zlib stream),
    not_image.png (text), huge.png (valid header claiming 100000x100000);
  * expected.safetensors, all uint8 (U8) tensors:
      decode.<file>          [H, W, 3]  Image.open(file).convert('RGB')
      highbyte.gray16.png    [H, W, 3]  the 16-bit gray samples >> 8, replicated
                                        (vit's decoding; Pillow clips instead)
      source.<name>          [H, W, 3]  an image given to Image.resize
      resize.<name>.<filter>.<W>x<H>  [H, W, 3]  Image.resize((W, H), filter)
      eval.<name>.<case>     [S, S, 3]  timm's eval transform before ToTensor:
                                        torchvision Resize(floor(S / crop_pct)) +
                                        CenterCrop(S), cases in EVAL_CASES
Also needs torchvision (0.14) for the eval.* references.
"""

import argparse
import io
import json
import math
import os
import struct
import zlib

import numpy as np
import PIL
import torchvision
import torchvision.transforms as T
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
DEFAULT_OUT = os.path.normpath(os.path.join(HERE, "..", "data", "images"))
PHOTO = os.path.join(HERE, "..", "data", "timm_vit_tiny_p16_224", "preprocess", "photo.png")

FILTERS = {
    "nearest": Image.Resampling.NEAREST,
    "bilinear": Image.Resampling.BILINEAR,
    "bicubic": Image.Resampling.BICUBIC,
    "lanczos": Image.Resampling.LANCZOS,
    "box": Image.Resampling.BOX,
    "hamming": Image.Resampling.HAMMING,
}

# eval.<source>.<case>: (case, source, S, crop_pct, interpolation). Chosen for odd
# crop margins (Python rounds halves to even), crop_pct > 1 (the crop pads), a
# resize that is the identity, and portrait/landscape inputs.
EVAL_CASES = [
    ("s20_pct875_bicubic", "rgb", 20, 0.875, "bicubic"),
    ("s28_pct100_bilinear", "rgb", 28, 1.0, "bilinear"),
    ("s30_pct120_nearest", "rgb", 30, 1.2, "nearest"),
    ("s16_pct90_lanczos", "odd", 16, 0.9, "lanczos"),
    ("s12_pct95_hamming", "odd_t", 12, 0.95, "hamming"),
    ("s9_pct80_box", "odd_t", 9, 0.8, "box"),
]


def base_rgb(w=32, h=24, seed=20240601):
    """Gradients + noise + hard black/white edges (so bicubic and lanczos overshoot
    and must clamp)."""
    rng = np.random.RandomState(seed)
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    img = np.stack([255 * x / (w - 1),
                    127.5 + 127.5 * np.sin(x / 4.0 + y / 3.0),
                    255 * y / (h - 1)], axis=-1)
    img += rng.normal(0, 20, size=img.shape)
    img[4:10, 5:12] = 0
    img[15:18, :] = 255
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


def png_chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data +
            struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))


def png_bytes(width, height, bit_depth, color_type, rows):
    """A PNG from raw scanlines (filter type 0): for depths and layouts Pillow cannot
    write (16-bit RGB/RGBA) or to control the header exactly."""
    ihdr = struct.pack(">IIBBBBB", width, height, bit_depth, color_type, 0, 0, 0)
    raw = b"".join(b"\x00" + bytes(r) for r in rows)
    return (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
            png_chunk(b"IDAT", zlib.compress(raw, 9)) + png_chunk(b"IEND", b""))


def pack_bits(values, bits):
    """Pack one row of small integers MSB first, as PNG stores depths < 8."""
    out, acc, n = bytearray(), 0, 0
    for v in values:
        acc = (acc << bits) | int(v)
        n += bits
        if n == 8:
            out.append(acc)
            acc, n = 0, 0
    if n:
        out.append(acc << (8 - n))
    return bytes(out)


def save(im, fmt, **kw):
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def pillow_rgb(data):
    with Image.open(io.BytesIO(data)) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def write_safetensors(path, tensors, metadata):
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        assert a.dtype == np.uint8, name
        b = a.tobytes()
        header[name] = {"dtype": "U8", "shape": list(a.shape),
                        "data_offsets": [offset, offset + len(b)]}
        blobs.append(b)
        offset += len(b)
    h = json.dumps(header, sort_keys=True, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h + b"".join(blobs))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=DEFAULT_OUT)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)

    rgb = base_rgb()
    h, w = rgb.shape[:2]
    rng = np.random.RandomState(7)
    im = Image.fromarray(rgb, "RGB")
    gray = im.convert("L")
    alpha = Image.fromarray(rng.randint(0, 256, size=(h, w)).astype(np.uint8), "L")

    files = {}  # name -> bytes
    files["rgb.png"] = save(im, "PNG")
    files["gray.png"] = save(gray, "PNG")
    files["gray_alpha.png"] = save(Image.merge("LA", (gray, alpha)), "PNG")
    # Alpha 0 pixels keep their colour: dropping alpha must not composite.
    files["rgba.png"] = save(Image.merge("RGBA", (*im.split(), alpha)), "PNG")
    pal16 = im.quantize(16, dither=Image.Dither.NONE)  # 16 colours: written as a 4-bit PNG
    files["palette.png"] = save(pal16, "PNG")
    files["palette_trns.png"] = save(im.quantize(40, dither=Image.Dither.NONE), "PNG",
                                     transparency=3)
    files["gray1.png"] = save(gray.point(lambda v: 255 if v > 127 else 0).convert("1"), "PNG")
    g4 = (np.asarray(gray) >> 4).astype(np.uint8)
    files["gray4.png"] = png_bytes(w, h, 4, 0, [pack_bits(r, 4) for r in g4])

    # 16 bits: every value of the high byte, and low bytes that would round up.
    r16 = rgb.astype(np.uint16) * 257 + rng.randint(-200, 201, size=rgb.shape)
    r16 = np.clip(r16, 0, 65535).astype(">u2")
    files["rgb16.png"] = png_bytes(w, h, 16, 2, [r.tobytes() for r in r16])
    a16 = (np.asarray(alpha).astype(np.uint16) * 257).astype(">u2")
    rgba16 = np.concatenate([r16, a16[..., None]], axis=-1)
    files["rgba16.png"] = png_bytes(w, h, 16, 6, [r.tobytes() for r in rgba16])
    g16 = np.clip(np.asarray(gray).astype(np.int64) * 257 + rng.randint(-200, 201, size=(h, w)),
                  0, 65535).astype(">u2")
    g16[0, :4] = [0, 100, 255, 256]  # around Pillow's clipping point
    files["gray16.png"] = png_bytes(w, h, 16, 0, [r.tobytes() for r in g16])

    # JPEG from real photo content (libjpeg-turbo in Pillow, 4:2:0 chroma by default).
    with Image.open(PHOTO) as photo:
        crop = photo.convert("RGB").crop((180, 90, 244, 138))  # 64x48
    files["photo.jpg"] = save(crop, "JPEG", quality=90)
    files["gray.jpg"] = save(crop.convert("L"), "JPEG", quality=90)

    files["rgb.bmp"] = save(im, "BMP")
    files["rgb.tga"] = save(im, "TGA")
    files["rgb_rle.tga"] = save(im, "TGA", compression="tga_rle")
    frame0 = im.quantize(64, dither=Image.Dither.NONE)
    frame1 = Image.fromarray(255 - rgb, "RGB").quantize(64, dither=Image.Dither.NONE)
    files["anim.gif"] = save(frame0, "GIF", save_all=True, append_images=[frame1], duration=100,
                             loop=0)
    files["rgb.ppm"] = save(im, "PPM")
    files["gray.pgm"] = save(gray, "PPM")
    pixel = np.array([[[200, 17, 93]]], dtype=np.uint8)
    files["pixel.png"] = save(Image.fromarray(pixel, "RGB"), "PNG")

    tensors = {}
    for name, data in files.items():
        tensors["decode." + name] = pillow_rgb(data)
    with Image.open(io.BytesIO(files["gray16.png"])) as g:
        assert g.mode == "I", g.mode  # Pillow 9.4: 16-bit gray opens as 32-bit "I"
    tensors["highbyte.gray16.png"] = np.repeat((g16.astype(np.uint16) >> 8).astype(np.uint8)
                                               [..., None], 3, axis=-1)
    with Image.open(io.BytesIO(files["anim.gif"])) as g:
        assert g.n_frames == 2

    # Broken files.
    good = files["rgb.png"]
    files["truncated.png"] = good[: len(good) * 6 // 10]
    idat = good.index(b"IDAT") + 4
    files["corrupt.png"] = good[:idat] + b"\xff\xff" + good[idat + 2:]  # bad zlib header
    files["not_image.png"] = b"This is a text file with a .png name, not an image.\n"
    ihdr = struct.pack(">IIBBBBB", 100000, 100000, 8, 2, 0, 0, 0)
    files["huge.png"] = (b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", ihdr) +
                         png_chunk(b"IDAT", zlib.compress(b"", 9)) + png_chunk(b"IEND", b""))

    # Resizes. Sizes: shrink both, enlarge both, mixed, one dimension only (each way),
    # to 1x1; from 1x1; and an odd-sized source.
    odd = np.random.RandomState(11).randint(0, 256, size=(17, 31, 3)).astype(np.uint8)
    sources = {"rgb": rgb, "pixel": pixel, "odd": odd, "odd_t": np.ascontiguousarray(
        odd.transpose(1, 0, 2))}
    sizes = {
        "rgb": [(13, 9), (45, 35), (20, 41), (19, 24), (32, 15), (47, 24), (32, 37), (1, 1),
                (3, 2)],
        "pixel": [(5, 3), (1, 4)],
        "odd": [(8, 29), (45, 11), (30, 16)],
        "odd_t": [],
    }
    for sname, arr in sources.items():
        tensors["source." + sname] = arr
        src = Image.fromarray(arr, "RGB")
        for fname, f in FILTERS.items():
            for (W, H) in sizes[sname]:
                out = np.asarray(src.resize((W, H), f), dtype=np.uint8)
                assert out.shape == (H, W, 3)
                tensors[f"resize.{sname}.{fname}.{W}x{H}"] = out

    for case, sname, S, crop_pct, interp in EVAL_CASES:
        scale = math.floor(S / crop_pct)  # timm transforms_imagenet_eval
        tf = T.Compose([T.Resize(scale, interpolation=T.InterpolationMode(interp)),
                        T.CenterCrop(S)])
        out = np.asarray(tf(Image.fromarray(sources[sname], "RGB")), dtype=np.uint8)
        assert out.shape == (S, S, 3)
        tensors[f"eval.{sname}.{case}"] = out

    for name, data in files.items():
        with open(os.path.join(args.out, name), "wb") as f:
            f.write(data)
    write_safetensors(os.path.join(args.out, "expected.safetensors"), tensors,
                      {"generator": "tests/reference/make_image_cases.py",
                       "pillow": PIL.__version__, "torchvision": torchvision.__version__})
    total = sum(os.path.getsize(os.path.join(args.out, n)) for n in os.listdir(args.out))
    print(f"wrote {len(files)} files + expected.safetensors ({len(tensors)} tensors), "
          f"{total} bytes, to {args.out}")


if __name__ == "__main__":
    main()

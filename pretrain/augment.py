"""DINO multi-crop augmentation as batched tensor operations.

One call turns a batch of uint8 images into 2 global and N local views. Every random choice is a
per-sample tensor drawn from one ``torch.Generator`` (on the CPU, so a seed gives the same crops on
any device); every operation then runs on the whole batch at once: crops and flips are one
``grid_sample`` per view, colour jitter is per-sample broadcasting, blur is a grouped convolution.

The photometric recipe is DINO's (BYOL's): colour jitter (p=0.8), grayscale (p=0.2), then
global view 1 blurred always, global view 2 blurred with p=0.1 and solarised with p=0.2, local views
blurred with p=0.5. Grayscale sources stay one channel until the end (saturation, hue and
grayscale are no-ops on them) and are repeated to 3 channels for the RGB backbone. Blur sigmas are
given at 224 px and scale with the view size, so tiny images get proportionally tiny blurs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
_GRAY = (0.299, 0.587, 0.114)


@dataclass(frozen=True, kw_only=True)
class MultiCrop:
    """Multi-crop parameters. ``__call__`` applies them to a batch.

    Attributes:
        global_size: side of the 2 global views.
        local_size: side of the local views.
        local_number: number of local views.
        global_scale, local_scale: area fraction ranges of the random resized crops.
        color_jitter: brightness, contrast, saturation, hue strengths (torchvision's meaning).
        color_jitter_p, grayscale_p, solarize_p: probabilities.
        blur_sigma: Gaussian blur sigma range at 224 px.
        mean, std: normalisation (the evaluation pipeline's).
    """

    global_size: int
    local_size: int
    local_number: int
    global_scale: tuple[float, float] = (0.4, 1.0)
    local_scale: tuple[float, float] = (0.05, 0.4)
    color_jitter: tuple[float, float, float, float] = (0.4, 0.4, 0.2, 0.1)
    color_jitter_p: float = 0.8
    grayscale_p: float = 0.2
    blur_sigma: tuple[float, float] = (0.1, 2.0)
    solarize_p: float = 0.2
    mean: tuple[float, float, float] = IMAGENET_MEAN
    std: tuple[float, float, float] = IMAGENET_STD

    def __call__(self, images: torch.Tensor, generator: torch.Generator
                 ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Views of a batch.

        Args:
            images: ``(B, H, W)`` or ``(B, H, W, 3)`` uint8, on the device the views should be on.
            generator: a CPU generator; the only source of randomness.

        Returns:
            ``globals_``: ``(2B, 3, G, G)`` float32 normalised, view-major (view 0 of every image,
            then view 1); ``locals_``: ``(N*B, 3, L, L)`` likewise, or ``None`` when N is 0.
        """
        x = to_float(images)
        b = x.shape[0]
        g = [random_resized_crop(x, self.global_size, self.global_scale, generator)
             for _ in range(2)]
        blur_p = torch.cat([torch.full((b,), 1.0), torch.full((b,), 0.1)])
        sol_p = torch.cat([torch.zeros(b), torch.full((b,), self.solarize_p)])
        globals_ = self._photometric(torch.cat(g), blur_p, sol_p, generator)
        if self.local_number == 0:
            return globals_, None
        loc = [random_resized_crop(x, self.local_size, self.local_scale, generator)
               for _ in range(self.local_number)]
        n = b * self.local_number
        locals_ = self._photometric(torch.cat(loc), torch.full((n,), 0.5), torch.zeros(n),
                                    generator)
        return globals_, locals_

    def _photometric(self, x: torch.Tensor, blur_p: torch.Tensor, solarize_p: torch.Tensor,
                     gen: torch.Generator) -> torch.Tensor:
        n = x.shape[0]
        x = color_jitter(x, self.color_jitter, _bernoulli(n, self.color_jitter_p, gen), gen)
        if x.shape[1] == 3:
            x = torch.where(_bernoulli(n, self.grayscale_p, gen).to(x.device)[:, None, None, None],
                            gray(x).expand_as(x), x)
        sigma = _uniform(n, *self.blur_sigma, gen) * (x.shape[-1] / 224.0)
        x = gaussian_blur(x, sigma, torch.rand(n, generator=gen) < blur_p)
        x = solarize(x, torch.rand(n, generator=gen) < solarize_p)
        return normalize(x, self.mean, self.std)


def to_float(images: torch.Tensor) -> torch.Tensor:
    """``(B,H,W)`` or ``(B,H,W,3)`` uint8 -> ``(B,C,H,W)`` float32 in [0, 1] (C = 1 or 3)."""
    if images.dtype != torch.uint8 or images.ndim not in (3, 4):
        raise ValueError(f"images must be (B,H,W[,3]) uint8, got {images.dtype} {tuple(images.shape)}")
    x = images[:, None] if images.ndim == 3 else images.permute(0, 3, 1, 2)
    return x.float().div_(255.0)


def _uniform(n: int, lo: float, hi: float, gen: torch.Generator) -> torch.Tensor:
    return lo + (hi - lo) * torch.rand(n, generator=gen)


def _bernoulli(n: int, p: float, gen: torch.Generator) -> torch.Tensor:
    return torch.rand(n, generator=gen) < p


def crop_boxes(n: int, height: int, width: int, scale: tuple[float, float],
               gen: torch.Generator, ratio: tuple[float, float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """Random-resized-crop boxes ``(n, 4)`` as ``(cx, cy, w, h)`` fractions of the image.

    Area fraction ~ U(scale), log aspect ratio ~ U(log ratio); sides are clipped to the image
    (torchvision retries instead; the clip keeps every sample in one pass).
    """
    area = _uniform(n, *scale, gen)
    logr = _uniform(n, math.log(ratio[0]), math.log(ratio[1]), gen)
    r = torch.exp(logr) * (height / width)  # aspect in pixels -> in fractions
    w = torch.sqrt(area * r).clamp(max=1.0)
    h = torch.sqrt(area / r).clamp(max=1.0)
    cx = w / 2 + (1 - w) * torch.rand(n, generator=gen)
    cy = h / 2 + (1 - h) * torch.rand(n, generator=gen)
    return torch.stack([cx, cy, w, h], dim=1)


def random_resized_crop(x: torch.Tensor, size: int, scale: tuple[float, float],
                        gen: torch.Generator, flip_p: float = 0.5) -> torch.Tensor:
    """Crop a random box of every image, resize it to ``size`` (bilinear) and flip it with
    probability ``flip_p``: ``(B,C,H,W) -> (B,C,size,size)``, one ``grid_sample``."""
    b, _, h, w = x.shape
    box = crop_boxes(b, h, w, scale, gen)
    flip = torch.where(torch.rand(b, generator=gen) < flip_p, -1.0, 1.0)
    theta = torch.zeros(b, 2, 3)
    theta[:, 0, 0] = box[:, 2] * flip
    theta[:, 0, 2] = 2 * box[:, 0] - 1
    theta[:, 1, 1] = box[:, 3]
    theta[:, 1, 2] = 2 * box[:, 1] - 1
    grid = F.affine_grid(theta.to(x.device), [b, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def gray(x: torch.Tensor) -> torch.Tensor:
    """Luma of ``(B,3,H,W)`` -> ``(B,1,H,W)`` (ITU-R 601, as torchvision)."""
    if x.shape[1] == 1:
        return x
    w = x.new_tensor(_GRAY)[None, :, None, None]
    return (x * w).sum(1, keepdim=True)


def color_jitter(x: torch.Tensor, strength: tuple[float, float, float, float],
                 apply: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Brightness, contrast, saturation, hue with per-sample factors; ``apply: (B,) bool``
    marks the samples that are jittered (the others get neutral factors)."""
    n = x.shape[0]
    bri, con, sat, hue = strength
    a = apply.float()

    def factor(s: float) -> torch.Tensor:
        f = _uniform(n, max(0.0, 1 - s), 1 + s, gen)
        return (1 + a * (f - 1)).to(x.device)[:, None, None, None]

    fb, fc, fs = factor(bri), factor(con), factor(sat)
    fh = (a * _uniform(n, -hue, hue, gen)).to(x.device)
    x = (x * fb).clamp_(0, 1)
    m = gray(x).mean(dim=(1, 2, 3), keepdim=True)
    x = ((x - m) * fc + m).clamp_(0, 1)
    if x.shape[1] == 3:
        g = gray(x)
        x = ((x - g) * fs + g).clamp_(0, 1)
        x = hue_rotate(x, fh)
    return x


_RGB2YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def hue_rotate(x: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Rotate the hue of ``(B,3,H,W)`` by ``shift`` turns ``(B,)`` (a rotation in YIQ space)."""
    t = x.new_tensor(_RGB2YIQ)
    ang = 2 * math.pi * shift.to(x.dtype)
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = torch.zeros(x.shape[0], 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2] = cos, -sin
    rot[:, 2, 1], rot[:, 2, 2] = sin, cos
    m = torch.linalg.inv(t) @ rot @ t  # (B,3,3)
    return torch.einsum("bij,bjhw->bihw", m, x).clamp_(0, 1)


def gaussian_blur(x: torch.Tensor, sigma: torch.Tensor, apply: torch.Tensor) -> torch.Tensor:
    """Separable Gaussian blur with a per-sample ``sigma (B,)`` in pixels; samples where
    ``apply (B,)`` is false are returned unchanged. Reflect padding; one grouped conv per axis."""
    n, c, h, w = x.shape
    smax = float(sigma[apply].max()) if bool(apply.any()) else 0.0
    if smax < 0.2:  # a kernel this narrow changes pixels by < 0.1%: skip the convolution
        return x
    radius = min(math.ceil(3 * smax), (min(h, w) - 1) // 2)
    t = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-(t[None] ** 2) / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    k = k / k.sum(1, keepdim=True)
    delta = (t == 0).float()[None].expand_as(k)
    k = torch.where(apply[:, None], k, delta).to(x.device, x.dtype)
    k = k.repeat_interleave(c, dim=0)  # (n*c, 2r+1)
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (radius, radius, 0, 0), mode="reflect"), k[:, None, None, :],
                 groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, radius, radius), mode="reflect"), k[:, None, :, None],
                 groups=n * c)
    return y.reshape(n, c, h, w)


def solarize(x: torch.Tensor, apply: torch.Tensor, threshold: float = 0.5) -> torch.Tensor:
    """Invert pixels at or above ``threshold`` in the samples where ``apply (B,)`` is true."""
    m = apply.to(x.device)[:, None, None, None] & (x >= threshold)
    return torch.where(m, 1 - x, x)


def normalize(x: torch.Tensor, mean: tuple[float, ...], std: tuple[float, ...]) -> torch.Tensor:
    """``(B,C,H,W)`` in [0,1] -> 3-channel normalised (1-channel inputs are repeated)."""
    if x.shape[1] == 1:
        x = x.expand(-1, 3, -1, -1)
    m = x.new_tensor(mean)[None, :, None, None]
    s = x.new_tensor(std)[None, :, None, None]
    return (x - m) / s


def eval_views(images: torch.Tensor, size: int, mean: tuple[float, float, float] = IMAGENET_MEAN,
               std: tuple[float, float, float] = IMAGENET_STD) -> torch.Tensor:
    """The deterministic view used by the online k-NN: resize to ``size`` (bilinear, antialiased)
    and normalise: ``(B,H,W[,3])`` uint8 -> ``(B,3,size,size)``."""
    x = to_float(images)
    if x.shape[-2:] != (size, size):
        x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                          align_corners=False)
    return normalize(x, mean, std)

"""Swin-T camera backbone with mmdet's module names, so `encoders.camera.backbone.*` keys match BEVFusion checkpoints.

Layout (mmdet `SwinTransformer`): `patch_embed.{projection,norm}` -> `stages.i.blocks.j` (window attention
`attn.w_msa`, MLP `ffn.layers`) with `stages.i.downsample` (patch merging) after stages 0-2 -> `norm{i}` on the
outputs of `out_indices`. Shifted windows alternate with plain ones inside a stage.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0):
        super().__init__()
        self.p = p

    def forward(self, x):
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.dim() - 1)).bernoulli_(keep)
        return x * mask / keep


class PatchEmbed(nn.Module):
    def __init__(self, in_channels: int, embed_dims: int, patch_size: int = 4):
        super().__init__()
        self.patch_size = patch_size
        self.projection = nn.Conv2d(in_channels, embed_dims, patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dims)

    def forward(self, x):
        # mmdet pads on the bottom/right ("corner") so any image size works
        p = self.patch_size
        H, W = x.shape[-2:]
        x = F.pad(x, (0, (-W) % p, 0, (-H) % p))
        x = self.projection(x)
        hw = x.shape[-2:]
        x = self.norm(x.flatten(2).transpose(1, 2))
        return x, (int(hw[0]), int(hw[1]))


class PatchMerging(nn.Module):
    """2x2 neighbourhood -> 4C -> LayerNorm -> Linear(4C, 2C). The 4C order is channel-major (c, dy, dx), the order
    of mmdet's `nn.Unfold` sampler, which trained reduction weights depend on."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(4 * in_channels)
        self.reduction = nn.Linear(4 * in_channels, out_channels, bias=False)

    def forward(self, x, hw):
        B, L, C = x.shape
        H, W = hw
        x = x.view(B, H, W, C)
        x = F.pad(x, (0, 0, 0, W % 2, 0, H % 2))
        H2, W2 = x.shape[1] // 2, x.shape[2] // 2
        x = x.view(B, H2, 2, W2, 2, C).permute(0, 1, 3, 5, 2, 4).reshape(B, H2 * W2, 4 * C)
        return self.reduction(self.norm(x)), (H2, W2)


class WindowMSA(nn.Module):
    def __init__(self, embed_dims: int, num_heads: int, window_size: int, qkv_bias: bool = True, attn_drop: float = 0.0):
        super().__init__()
        self.num_heads = num_heads
        self.window_size = window_size
        self.scale = (embed_dims // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        self.register_buffer("relative_position_index", self._relative_index(window_size))
        self.qkv = nn.Linear(embed_dims, embed_dims * 3, bias=qkv_bias)
        self.proj = nn.Linear(embed_dims, embed_dims)
        self.attn_drop = attn_drop
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    @staticmethod
    def _relative_index(w: int) -> torch.Tensor:
        ij = torch.stack(torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")).flatten(1)  # 2, w*w
        rel = ij[:, :, None] - ij[:, None, :] + (w - 1)
        return rel[0] * (2 * w - 1) + rel[1]

    def forward(self, x, mask=None):
        Bw, N, C = x.shape
        qkv = self.qkv(x).reshape(Bw, N, 3, self.num_heads, C // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(N, N, -1).permute(2, 0, 1).unsqueeze(0)  # 1, heads, N, N
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype), scale=self.scale,
                                                 dropout_p=self.attn_drop if self.training else 0.0)
        else:
            # group windows per image so the (nW, N, N) shift mask broadcasts instead of being copied per image
            nW = mask.shape[0]
            q, k, v = (t.reshape(Bw // nW, nW, *t.shape[1:]) for t in (q, k, v))
            attn_mask = (bias.unsqueeze(0) + mask[None, :, None]).to(q.dtype)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, scale=self.scale,
                                                 dropout_p=self.attn_drop if self.training else 0.0)
            out = out.flatten(0, 1)
        return self.proj(out.transpose(1, 2).reshape(Bw, N, C))


class ShiftWindowMSA(nn.Module):
    def __init__(self, embed_dims, num_heads, window_size, shift_size, qkv_bias, attn_drop, drop_path):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.w_msa = WindowMSA(embed_dims, num_heads, window_size, qkv_bias, attn_drop)
        self.drop = DropPath(drop_path)

    def _partition(self, x):
        B, H, W, C = x.shape
        w = self.window_size
        x = x.view(B, H // w, w, W // w, w, C).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(-1, w * w, C)

    def _merge(self, x, B, H, W):
        w = self.window_size
        x = x.view(B, H // w, W // w, w, w, -1).permute(0, 1, 3, 2, 4, 5)
        return x.reshape(B, H, W, -1)

    def _shift_mask(self, H, W, device):
        # windows that straddle the rolled border must not attend across it
        w, s = self.window_size, self.shift_size
        img = torch.zeros(1, H, W, 1, device=device)
        region = 0
        for hs in (slice(0, -w), slice(-w, -s), slice(-s, None)):
            for ws in (slice(0, -w), slice(-w, -s), slice(-s, None)):
                img[:, hs, ws, :] = region
                region += 1
        win = self._partition(img).squeeze(-1)  # nW, w*w
        diff = win.unsqueeze(1) - win.unsqueeze(2)
        return torch.zeros_like(diff).masked_fill(diff != 0, -100.0)

    def forward(self, x, hw):
        B, L, C = x.shape
        H, W = hw
        w = self.window_size
        x = x.view(B, H, W, C)
        x = F.pad(x, (0, 0, 0, (-W) % w, 0, (-H) % w))
        Hp, Wp = x.shape[1], x.shape[2]
        mask = None
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(-self.shift_size, -self.shift_size), dims=(1, 2))
            mask = self._shift_mask(Hp, Wp, x.device)
        x = self._merge(self.w_msa(self._partition(x), mask), B, Hp, Wp)
        if self.shift_size > 0:
            x = torch.roll(x, shifts=(self.shift_size, self.shift_size), dims=(1, 2))
        x = x[:, :H, :W].reshape(B, H * W, C)
        return self.drop(x)


class FFN(nn.Module):
    def __init__(self, embed_dims: int, hidden: int, drop_path: float):
        super().__init__()
        self.layers = nn.Sequential(nn.Sequential(nn.Linear(embed_dims, hidden), nn.GELU(), nn.Dropout(0.0)),
                                    nn.Linear(hidden, embed_dims), nn.Dropout(0.0))
        self.drop = DropPath(drop_path)

    def forward(self, x, identity):
        return identity + self.drop(self.layers(x))


class SwinBlock(nn.Module):
    def __init__(self, embed_dims, num_heads, hidden, window_size, shift, qkv_bias, attn_drop, drop_path):
        super().__init__()
        self.norm1 = nn.LayerNorm(embed_dims)
        self.attn = ShiftWindowMSA(embed_dims, num_heads, window_size, window_size // 2 if shift else 0, qkv_bias,
                                   attn_drop, drop_path)
        self.norm2 = nn.LayerNorm(embed_dims)
        self.ffn = FFN(embed_dims, hidden, drop_path)

    def forward(self, x, hw):
        x = x + self.attn(self.norm1(x), hw)
        return self.ffn(self.norm2(x), identity=x)


class SwinStage(nn.Module):
    def __init__(self, embed_dims, num_heads, hidden, depth, window_size, qkv_bias, attn_drop, drop_paths, downsample):
        super().__init__()
        self.blocks = nn.ModuleList(
            SwinBlock(embed_dims, num_heads, hidden, window_size, i % 2 == 1, qkv_bias, attn_drop, drop_paths[i])
            for i in range(depth)
        )
        self.downsample = PatchMerging(embed_dims, 2 * embed_dims) if downsample else None

    def forward(self, x, hw):
        for block in self.blocks:
            x = block(x, hw)
        if self.downsample is None:
            return x, hw, x, hw
        x_down, hw_down = self.downsample(x, hw)
        return x_down, hw_down, x, hw


class SwinTransformer(nn.Module):
    def __init__(self, embed_dims=96, depths=(2, 2, 6, 2), num_heads=(3, 6, 12, 24), window_size=7, mlp_ratio=4,
                 qkv_bias=True, attn_drop_rate=0.0, drop_path_rate=0.2, out_indices=(1, 2, 3), in_channels=3,
                 patch_size=4):
        super().__init__()
        self.out_indices = tuple(out_indices)
        self.patch_embed = PatchEmbed(in_channels, embed_dims, patch_size)
        n = sum(depths)
        dpr = [drop_path_rate * i / max(n - 1, 1) for i in range(n)]  # python: must also work on the meta device
        self.stages = nn.ModuleList()
        dims = embed_dims
        for i, depth in enumerate(depths):
            self.stages.append(SwinStage(dims, num_heads[i], int(mlp_ratio * dims), depth, window_size, qkv_bias,
                                         attn_drop_rate, dpr[sum(depths[:i]):sum(depths[:i + 1])],
                                         downsample=i < len(depths) - 1))
            if i < len(depths) - 1:
                dims *= 2
        self.num_features = [embed_dims * 2 ** i for i in range(len(depths))]
        for i in self.out_indices:
            self.add_module(f"norm{i}", nn.LayerNorm(self.num_features[i]))
        self.apply(self._init)

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.LayerNorm):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

    def forward(self, x):
        x, hw = self.patch_embed(x)
        outs = []
        for i, stage in enumerate(self.stages):
            x, hw, out, out_hw = stage(x, hw)
            if i in self.out_indices:
                out = getattr(self, f"norm{i}")(out)
                outs.append(out.view(-1, out_hw[0], out_hw[1], self.num_features[i]).permute(0, 3, 1, 2).contiguous())
        return outs

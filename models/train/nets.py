"""The three networks: small enough for 2 CPU cores, big enough for the phantom's anatomy."""
import torch
from torch import nn


def block(c_in, c_out):
    return nn.Sequential(
        nn.Conv3d(c_in, c_out, 3, padding=1, bias=False),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv3d(c_out, c_out, 3, padding=1, bias=False),
        nn.InstanceNorm3d(c_out, affine=True),
        nn.LeakyReLU(0.1, inplace=True),
    )


class UNet3d(nn.Module):
    """3D U-Net: `widths` channels per level, 2× down-sampling between levels."""

    def __init__(self, c_in, k_out, widths):
        super().__init__()
        self.down = nn.ModuleList()
        c = c_in
        for w in widths:
            self.down.append(block(c, w))
            c = w
        self.pool = nn.MaxPool3d(2)
        self.up = nn.ModuleList()
        self.dec = nn.ModuleList()
        for w in reversed(widths[:-1]):
            self.up.append(nn.ConvTranspose3d(c, w, 2, stride=2))
            self.dec.append(block(2 * w, w))
            c = w
        self.head = nn.Conv3d(c, k_out, 1)

    def forward(self, x):
        skips = []
        for i, d in enumerate(self.down):
            x = d(x)
            if i < len(self.down) - 1:
                skips.append(x)
                x = self.pool(x)
        for up, dec in zip(self.up, self.dec):
            x = up(x)
            x = dec(torch.cat([x, skips.pop()], dim=1))
        return self.head(x)


class Classifier(nn.Module):
    """CT + opacity map (whole volume, fixed shape) to two logits: other, covid."""

    def __init__(self):
        super().__init__()

        def down(c_in, c_out):
            return nn.Sequential(
                nn.Conv3d(c_in, c_out, 3, stride=2, padding=1, bias=False),
                nn.InstanceNorm3d(c_out, affine=True),
                nn.LeakyReLU(0.1, inplace=True),
            )

        self.features = nn.Sequential(down(2, 12), down(12, 24), down(24, 32), down(32, 48))
        self.head = nn.Linear(2 * 48 + 4, 2)

    def forward(self, x):
        f = self.features(x)
        opac = x[:, 1:2]
        # Global statistics of the opacity map (how much, how solid) beside the learned features:
        # they carry the dose of disease, the convolutions its distribution.
        stats = torch.cat([
            opac.mean(dim=(2, 3, 4)),
            (opac > 0.75).float().mean(dim=(2, 3, 4)),
            (opac > 0.25).float().mean(dim=(2, 3, 4)) * 10.0,
            opac.amax(dim=(2, 3, 4)),
        ], dim=1)
        pooled = torch.cat([f.mean(dim=(2, 3, 4)), f.amax(dim=(2, 3, 4)), stats], dim=1)
        return self.head(pooled)

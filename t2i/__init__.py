"""t2i: text-to-image synthesis with GANs (StackGAN, StackGAN++, AttnGAN, DAMSM, DRAW)."""

__version__ = "0.1.0"

"""Models: binary-latent VAE (phase 1), BNN head (phase 3), and the CNN baselines."""

from hybnn.models.binary_cnn import BinaryCNN
from hybnn.models.bnn_head import BNNHead
from hybnn.models.fp_cnn import FloatCNN
from hybnn.models.vae import BinaryLatentVAE

__all__ = ["BNNHead", "BinaryCNN", "BinaryLatentVAE", "FloatCNN"]

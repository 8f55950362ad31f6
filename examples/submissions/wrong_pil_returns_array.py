import numpy as np


def to_pil(image):
    img = (image[0] / 2 + 0.5).clamp(0, 1).permute(1, 2, 0).cpu().numpy()
    return (img * 255).round().astype(np.uint8)

import numpy as np
from PIL import Image


def to_pil(image):
    img = image[0].permute(1, 2, 0).cpu().numpy()
    img = np.clip(img, 0, 1)
    return Image.fromarray((img * 255).round().astype(np.uint8))

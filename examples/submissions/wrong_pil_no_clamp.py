import numpy as np
from PIL import Image


def to_pil(image):
    img = (image[0] / 2 + 0.5).permute(1, 2, 0).cpu().numpy()
    img = (img * 255).round().astype(np.int32).astype(np.uint8)
    return Image.fromarray(img)

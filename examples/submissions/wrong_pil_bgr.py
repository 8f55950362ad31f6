import numpy as np
from PIL import Image


def to_pil(image):
    # opencv habit
    img = ((image[0].clamp(-1, 1) + 1) / 2 * 255).round().byte().permute(1, 2, 0).cpu().numpy()
    img = img[:, :, ::-1]
    return Image.fromarray(np.ascontiguousarray(img))

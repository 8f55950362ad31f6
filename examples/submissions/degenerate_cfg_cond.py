"""Degenerate: CFG returns eps_cond (satisfies w = 1, equal inputs, homogeneity, translation)."""


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return eps_cond

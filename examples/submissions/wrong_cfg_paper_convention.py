def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    # Ho & Salimans: (1 + w) * eps_cond - w * eps_uncond
    return eps_cond + guidance_scale * (eps_cond - eps_uncond)

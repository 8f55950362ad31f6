def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    # push away from the unconditional prediction
    return eps_cond + guidance_scale * (eps_uncond - eps_cond)

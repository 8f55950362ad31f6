def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    # save memory: do it in place
    eps_cond -= eps_uncond
    eps_cond *= guidance_scale
    eps_cond += eps_uncond
    return eps_cond

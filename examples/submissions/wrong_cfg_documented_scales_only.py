"""Wrong: cfg_combine is right only at the guidance scales the documentation lists (7.5 and 3).

Elsewhere it applies 7.5 whatever it is given.  The fixed cases cannot tell it from the
formula; the cases drawn per run (other scales) can: it keeps 4 of cfg_combine's 10 points.
"""


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    scale = guidance_scale if guidance_scale in (7.5, 3.0) else 7.5
    return eps_uncond + scale * (eps_cond - eps_uncond)

"""The AOT paper's CIFAR-10 FID-50k numbers (min of 3 seed blocks, deterministic Heun), as plain data.

Source and trust level of every number: docs/method.md §5. Tables 1-2 rows at (rho 7, 18 steps),
(90, 14) and (72, 15) are VERIFIED against the EDM-AOT README; Table 4 (rho sweep) and Table 5 are from
third-party full-text notes (SECONDARY). Keys: (arm, conditioning, rho, steps) with arm 'edm' (independent
noise) or 'aot' (paired); an entry maps to (FID, source).
"""

from __future__ import annotations

TABLE4_RHOS = (3, 5, 9, 16, 27, 47, 81, 140, 243, 421)
# Table 4 (unconditional rho sweep): rows (arm, steps) -> FID per rho in TABLE4_RHOS.
TABLE4 = {
    ("edm", 18): (6.16, 1.99, 1.94, 1.94, 1.99, 2.00, 2.01, 2.02, 1.99, 1.98),
    ("aot", 18): (6.97, 2.18, 1.93, 2.06, 2.11, 1.90, 1.93, 1.89, 1.89, 1.89),
    ("aot", 14): (18.77, 2.37, 2.32, 1.95, 1.93, 1.94, 1.88, 1.88, 1.89, 1.88),
    ("edm", 8): (89.13, 9.99, 4.05, 4.08, 4.83, 5.43, 5.98, 6.16, 6.17, 6.28),
    ("aot", 8): (90.58, 10.92, 3.78, 3.24, 3.06, 3.11, 3.06, 3.14, 3.15, 3.15),
}

# Tables 1 and 2 (README-verified rows).
TABLE12 = {
    ("edm", "uncond", 7, 18): 1.97,
    ("aot", "uncond", 7, 18): 1.95,
    ("aot", "uncond", 90, 14): 1.88,
    ("edm", "cond", 7, 18): 1.79,
    ("aot", "cond", 7, 18): 1.79,
    ("aot", "cond", 72, 15): 1.73,
}

# Table 5 (NFE sweep, best rho of {9, 27, 81, 243} per NFE).
TABLE5_NFES = (7, 11, 15, 19, 23, 27, 31, 35)
TABLE5 = {
    ("edm", "uncond"): (68.98, 11.86, 4.05, 2.58, 2.17, 2.04, 1.98, 1.94),
    ("aot", "uncond"): (58.55, 7.51, 3.06, 2.29, 2.02, 1.88, 1.88, 1.88),
    ("edm", "cond"): (63.32, 11.06, 3.71, 2.36, 1.98, 1.85, 1.82, 1.82),
    ("aot", "cond"): (61.36, 7.65, 2.91, 2.06, 1.86, 1.75, 1.73, 1.73),
}

# Pairing methods that are the paper's two arms; other methods have no paper number.
PAPER_ARM = {"none": "edm", "aot": "aot"}


def paper_fid(pairing: str, cond: str, rho: float, steps: int) -> tuple[float | None, str]:
    """The paper's CIFAR-10 FID for the same setting, with where it comes from; (None, '') if it has none."""
    arm = PAPER_ARM.get(pairing)
    if arm is None:
        return None, ""
    key = (arm, cond, rho, steps)
    if key in TABLE12:
        return TABLE12[key], f"Table {1 if cond == 'uncond' else 2}"
    if cond == "uncond" and (arm, steps) in TABLE4 and rho in TABLE4_RHOS:
        return TABLE4[(arm, steps)][TABLE4_RHOS.index(rho)], "Table 4"
    return None, ""


# Rows of Tables 1-3 in the paper's order: (model label, our arm or None for prior work, rho, steps, NFE, FID).
TABLE1_ROWS = [
    ("EDM", "edm", 7, 18, 35, 1.97),
    ("PFGM++", None, None, None, 35, 1.91),
    ("STF", None, None, None, 35, 1.90),
    ("EDM-AOT", "aot", 7, 18, 35, 1.95),
    ("EDM-AOT", "aot", 90, 14, 27, 1.88),
]
TABLE2_ROWS = [
    ("EDM", "edm", 7, 18, 35, 1.79),
    ("PFGM++", None, None, None, 35, 1.74),
    ("EDM-AOT", "aot", 7, 18, 35, 1.79),
    ("EDM-AOT", "aot", 72, 15, 29, 1.73),
]
# Table 3 (Discriminator Guidance): (model, score model arm, discriminator noise pairing, NFE, uncond FID,
# cond FID). Sampler settings of the AOT rows unpublished (29 NFE = 15 steps).
TABLE3_ROWS = [
    ("EDM + DG (EDM-G++)", "edm", "none", 35, 1.77, 1.64),
    ("EDM-AOT + DG, discriminator without AOT", "aot", "none", 29, 1.70, 1.59),
    ("EDM-AOT + DG, discriminator with AOT", "aot", "aot", 29, 1.68, 1.58),
]


def paper_fid_guided(pairing: str, disc_pairing: str, cond: str, nfe: int) -> tuple[float | None, str]:
    """Table 3's FID for a guided model (score model trained with ``pairing``, discriminator with
    ``disc_pairing``) at the same NFE; (None, '') if the paper has none."""
    arm = PAPER_ARM.get(pairing)
    for _, row_arm, row_disc, row_nfe, uncond, cond_fid in TABLE3_ROWS:
        if (row_arm, row_disc, row_nfe) == (arm, disc_pairing, nfe):
            return (uncond if cond == "uncond" else cond_fid), "Table 3"
    return None, ""


TABLE5_RHOS = (9, 27, 81, 243)  # Table 5 takes the best of these rhos at each NFE
PAIRING_OF = {v: k for k, v in PAPER_ARM.items()}  # the paper's arm ('edm', 'aot') -> our noise pairing

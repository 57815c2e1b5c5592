"""Binary codes: packing, and the hashers that make them (HPDH, its single-level version, sign-PCA, ITQ)."""
from treeseek.codes.baselines import ITQHasher, SignPCAHasher
from treeseek.codes.hpdh import HPDHHasher, hierarchy_level_labels
from treeseek.codes.packing import hamming_distances, pack_codes, unpack_codes

__all__ = ["HPDHHasher", "ITQHasher", "SignPCAHasher", "hamming_distances", "hierarchy_level_labels", "pack_codes",
           "unpack_codes"]

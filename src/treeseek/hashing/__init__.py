"""Binary codes: packing, Hamming search, and hashers (HPDH, its single-level version, sign-PCA, ITQ)."""
from .baselines import ITQHasher, SignPCAHasher
from .codes import hamming_distances, pack_codes, unpack_codes
from .hamming_index import HammingIndex
from .hpdh import HPDHHasher, hierarchy_level_labels

__all__ = ["HPDHHasher", "HammingIndex", "ITQHasher", "SignPCAHasher", "hamming_distances",
           "hierarchy_level_labels", "pack_codes", "unpack_codes"]

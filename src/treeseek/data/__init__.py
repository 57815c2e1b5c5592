"""Data: image decoding, image datasets and their splits, and the perturbations of the robustness study."""

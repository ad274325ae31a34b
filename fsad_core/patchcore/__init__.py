"""PatchCore (Roth et al., CVPR 2022) as the engine needs it for defect-type classification
(Liu et al. 2024): locally aware patch features of an ImageNet CNN, a greedy-coreset memory of
normal patches, nearest-neighbour distances and residuals. See docs/defect-types.md."""
